"""Numeric precision policy shared by training and ranking: what a ``precision`` setting resolves to on this
machine, and its autocast context.

``auto`` (the default everywhere) is bf16 autocast where bfloat16 is native -- CUDA, or a CPU with
AVX512-BF16 or AMX -- and float32 elsewhere. On a CPU without either, bfloat16 is emulated, several times slower
than float32 (``benchmarks/bench_train.py``; docs/performance.md, "Precision"), so an explicit ``bf16`` there
stops unless the user forces it with ``GENREC_FORCE_BF16=1``. Forcing is a property of the machine, not of
the experiment, so it lives in the environment and not in params.yaml; the precision a run actually used is
recorded with its metrics either way.
"""
from __future__ import annotations

import os

import torch

from pipeline.errors import UserError

PRECISIONS = ("auto", "bf16", "fp32")
FORCE_ENV = "GENREC_FORCE_BF16"


class PrecisionError(UserError, ValueError):
    """An explicit bf16 setting on a CPU that would only emulate it."""


# oneDNN instruction-set caps (its documented ONEDNN_MAX_CPU_ISA values) below AVX512_CORE_BF16: with one of
# these set, oneDNN's bf16 kernels are emulated even on a CPU that has the instructions.
_ISA_CAPS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX tiles), as PyTorch's own probes say,
    and oneDNN is not capped below those instructions (``ONEDNN_MAX_CPU_ISA``)."""
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in _ISA_CAPS_WITHOUT_BF16:
        return False
    return bool(native_bf16_flags())


# PyTorch's probes of the instructions that make bfloat16 native on a CPU: (flag name, torch.cpu function)
BF16_PROBES = (("avx512_bf16", "_is_avx512_bf16_supported"), ("amx", "_is_amx_tile_supported"))


def native_bf16_flags() -> list[str]:
    """The native-bfloat16 instruction sets PyTorch finds on this CPU (regardless of any oneDNN cap)."""
    return [flag for flag, probe in BF16_PROBES if getattr(torch.cpu, probe, lambda: False)()]


def native_bf16(device: torch.device) -> bool:
    """bf16 is native on CUDA (every GPU the README targets) and on CPUs with AVX512-BF16/AMX."""
    return device.type == "cuda" or (device.type == "cpu" and native_bf16_cpu())


def resolve_precision(device: torch.device, precision: str, setting: str = "precision") -> str:
    """``bf16`` or ``fp32``: what ``precision`` means on ``device``. ``setting`` names the params key in the
    error raised for an explicit bf16 on a CPU without native support (unless ``GENREC_FORCE_BF16=1``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"{setting} must be one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return "fp32"
    if native_bf16(device):
        return "bf16"
    if precision == "auto":
        return "fp32"
    if os.environ.get(FORCE_ENV) == "1":
        return "bf16"
    raise PrecisionError(
        f"{setting}: bf16, but this CPU has no native bfloat16 (neither AVX512-BF16 nor AMX): it would be "
        f"emulated, measured at x0.13 the float32 speed for TIGER's training step. Set {setting}: auto "
        f"(float32 here, bf16 where native) or fp32; or run with {FORCE_ENV}=1 to use bf16 anyway.")


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of ``precision`` on ``device`` (resolved first; bf16 needs no gradient scaler)."""
    resolved = resolve_precision(device, precision)
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=resolved == "bf16")
