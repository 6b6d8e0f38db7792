"""The one place that turns a `device` parameter into a torch device."""
from __future__ import annotations

import platform

import torch

from pipeline.runtime.precision import native_bf16_cpu, native_bf16_flags


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when available, else cpu; anything else is passed to torch.device."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def describe(device: torch.device) -> str:
    """The hardware a speed figure was measured on: GPU name, or CPU model with the flags that decide
    bfloat16 speed (docs/performance.md: every figure names its machine) and the thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:  # Linux: the marketing name; elsewhere platform's answer is the best we have
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    native = "native bf16: " + ("+".join(native_bf16_flags()) if native_bf16_cpu() else "none")
    return f"{model} ({native}), {torch.get_num_threads()} threads"
