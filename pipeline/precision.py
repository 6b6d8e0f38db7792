"""Numeric precision policy shared by training and ranking: which autocast a ``precision`` setting means."""
from __future__ import annotations

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def emulated_bf16(device: torch.device, precision: str) -> bool:
    """bf16 asked for on a CPU without AVX512-BF16 or AMX: it still runs, but slower than float32."""
    if precision != "bf16" or device.type != "cpu":
        return False
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return not any(probe() for probe in probes if probe is not None)


def autocast(device: torch.device, precision: str = "auto"):
    """The autocast context of ``precision`` on ``device`` (bf16 needs no gradient scaler)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    enabled = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)
