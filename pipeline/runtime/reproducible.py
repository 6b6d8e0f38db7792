"""The same bytes from every install of the pinned environment (docs/performance.md, "Reproducibility").

What the pinned environment (scripts/requirements.lock) showed on the default data:
- The text encoder's output depends on which CPU kernels run: oneDNN's and ATen's AVX-512 code paths
  give other float32 rounding than their AVX2 ones, so the same install wrote other `embeddings.npy`
  bytes on CPUs with and without AVX-512. ``portable_cpu_numerics`` caps oneDNN, ATen and MKL at AVX2
  for the upstream stages (embed, tokenize@, semantic_ids@), which every x86-64 CPU of the last decade
  has; the cost there was within noise (``benchmarks/bench_embed.py`` times it).
- Training and ranking bytes depend on the number of CPU threads (1, 2 and 8 gave three different
  weight files), so train@ and evaluate@ run on ``cpu_threads`` threads (params.yaml), not on whatever
  the machine has. Their kernels are not capped: that would rule out native bfloat16 (``precision:
  auto``), so CPU training reproduces on the same kind of CPU only.
"""
from __future__ import annotations

import os
import platform

# oneDNN's and MKL's documented instruction-set caps and ATen's dispatch override, all at AVX2.
PORTABLE_CPU_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2"}


def portable_cpu_numerics(log=print) -> None:
    """Cap the CPU kernels at AVX2 for this process. Call before the first tensor operation: the three
    libraries read these settings once, at their first use (checked for ATen below)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        log(f"note: {platform.machine()} CPU: outputs are reproducible on this kind of CPU only")
        return
    os.environ.update(PORTABLE_CPU_ENV)
    import torch

    capability = torch.backends.cpu.get_cpu_capability()
    if capability == "DEFAULT":  # a CPU without AVX2: other kernels, other bytes than the committed lock
        log("note: this CPU has no AVX2; its outputs will differ from those recorded in dvc.lock")
    elif capability != "AVX2":
        raise RuntimeError(f"portable_cpu_numerics() came after torch chose its {capability} kernels")


def pin_threads(threads: int) -> None:
    """Run torch's CPU work on exactly ``threads`` threads (params.yaml ``cpu_threads``)."""
    import torch

    torch.set_num_threads(threads)
