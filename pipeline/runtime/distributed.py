"""More than one process with PyTorch's own engine: ``torchrun`` starts the processes and sets RANK,
WORLD_SIZE and LOCAL_RANK; the trainer joins the process group here and wraps the model in
DistributedDataParallel. Without those variables (a plain ``python -m stages.train``) everything is one
process and these functions say so.

    torchrun --nproc_per_node 4 -m stages.train tiger    # 4 GPUs (NCCL), or 4 CPU processes (gloo)
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank: the group's, or before joining it the launcher's RANK (0 without a launcher)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def is_main() -> bool:
    """True in the process that validates, logs and writes files (rank 0), and in a single process."""
    return rank() == 0


def launched() -> bool:
    """Started by torchrun (or another launcher setting the same variables) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device: torch.device) -> torch.device:
    """Join the launcher's process group (NCCL on CUDA, gloo on a CPU) once; return this process's device.

    On CUDA each process takes the GPU of its LOCAL_RANK. The timeout is long because the other ranks wait
    at a barrier while rank 0 validates, which on a large dataset takes minutes."""
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(hours=2))
    return device


def leave() -> None:
    """Leave the process group at the end of a stage (a clean exit for every torchrun process)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
