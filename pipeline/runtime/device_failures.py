"""A device that fails under a stage: out of memory, or a CUDA device that is lost, turned into one-line
messages that say where it happened, which setting to change and what is kept (docs/operations.md, "When
things fail").

Two classes, both user errors (``pipeline.errors.UserError``: the stage prints the message and exits with
status 1, no traceback):

- out of memory: ``torch.OutOfMemoryError`` (``torch.cuda.OutOfMemoryError`` is the same class), or an
  allocator's "out of memory" / "can't allocate memory" (cuBLAS, the CPU allocator);
- a lost device: ``torch.AcceleratorError``, or a ``RuntimeError`` saying "CUDA error" (a device-side assert,
  an unspecified launch failure, no CUDA-capable device): the process cannot use the device any more.

The trainer adds the epoch, the step and its checkpoint (``training_failure``); every other stage gets the
generic form from ``flows.run_stage`` (``stage_failure``). This module imports no torch: a stage that never
loaded it cannot meet a torch error.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from pipeline.errors import UserError

# what a CUDA error says when the device is gone or its context is unusable (CUDA runtime error strings)
_LOST_PHRASES = ("CUDA error", "device-side assert", "unspecified launch failure", "no CUDA-capable device",
                 "CUDA driver", "illegal memory access", "cudaError")
_MEMORY_PHRASES = ("out of memory", "can't allocate memory", "CUBLAS_STATUS_ALLOC_FAILED")
# the batch-size key of each stage kind outside the trainer (params.yaml)
_BATCH_KEYS = {"embed": "embed.batch_size", "tokenize": "tokenizers.{block}.batch_size",
               "train": "methods.{block}.train.batch_size", "evaluate": "evaluate.batch_size"}


class DeviceOutOfMemory(UserError):
    """The device ran out of memory: a smaller batch, or a device others do not share, is the repair."""
    reason = "the device ran out of memory"


class DeviceLost(UserError):
    """The device failed (a CUDA error): this process cannot use it any more; a new process may."""
    reason = "the device failed"


def kind_of(exc: BaseException) -> str | None:
    """``"memory"``, ``"lost"`` or None (not a device failure)."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if isinstance(exc, torch.OutOfMemoryError) or any(p in text for p in _MEMORY_PHRASES):
        return "memory"
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if (accelerator_error and isinstance(exc, accelerator_error)) or any(p in text for p in _LOST_PHRASES):
        return "lost"
    return None


def memory_detail(exc: BaseException) -> str:
    """What the allocator said, short: "tried to allocate 2.00 GiB; 6.44 MiB of 79.11 GiB free"."""
    text = str(exc)
    asked = re.search(r"Tried to allocate ([\d.]+ \w+)", text)
    free = re.search(r"total capacity of ([\d.]+ \w+) of which ([\d.]+ \w+) is free", text)
    if asked and free:
        return f"tried to allocate {asked[1]}; {free[2]} of {free[1]} free"
    return first_line(exc)


def first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:160]


def _kept(checkpoint: Path, epoch: int) -> str:
    if epoch <= 0:
        return "No epoch had finished, so there is no checkpoint yet: a re-run starts from epoch 1."
    return (f"Nothing is lost: the checkpoint of epoch {epoch} ({checkpoint}) is kept, and `dvc repro` with the "
            f"same settings resumes after epoch {epoch}.")


def training_failure(exc: BaseException, *, block: str, during: str, batch_key: str, batch_size: int,
                     device: object, checkpoint: Path, checkpointed: int) -> UserError | None:
    """The user error for ``exc`` met by a training ``during`` ("epoch 3, step 17 of 52"), or None.

    ``block`` is the method's params key (``methods.tiger``), ``batch_key`` the batch-size key under its
    ``train`` (``batch_size`` or ``eval_batch_size``), ``checkpointed`` the epoch of the last checkpoint."""
    kind = kind_of(exc)
    if kind == "memory":
        key = f"{block}.train.{batch_key}"
        return DeviceOutOfMemory(
            f"out of memory on {device} in {during} at {key} {batch_size} ({memory_detail(exc)}). "
            f"{_kept(checkpoint, checkpointed)} Lower {key} in params.yaml (the training then starts again from "
            "epoch 1: the checkpoint is of other settings), or free the device of other processes and run "
            "`dvc repro` again")
    if kind == "lost":
        # a device-side assert is mostly an index out of range: the CPU, or synchronous launches, show where
        bug = (f" A device-side assert is usually an index out of range: {block}.device: cpu, or "
               "CUDA_LAUNCH_BLOCKING=1, shows where." if "device-side assert" in str(exc) else "")
        return DeviceLost(
            f"the {device} device failed in {during} ({first_line(exc)}): this process cannot use it any more. "
            f"{_kept(checkpoint, checkpointed)} Check the GPU (`nvidia-smi`), then run `dvc repro` again, on this "
            f"GPU or on another one (CUDA_VISIBLE_DEVICES=1 dvc repro; changing {block}.device or "
            f"{block}.train.precision trains from epoch 1 again).{bug}")
    return None


def stage_failure(exc: BaseException, stage: str) -> UserError | None:
    """The generic user error for a device failure of a stage (``evaluate@tiger``) outside the trainer, or None.
    Outputs are renamed into place only when complete (``pipeline.io``), so nothing partial is left."""
    kind = kind_of(exc)
    if kind is None:
        return None
    name, _, block = stage.partition("@")
    key = _BATCH_KEYS.get(name, "").format(block=block)
    if kind == "memory":
        lower = f"lower {key} in params.yaml" if key else "lower the stage's batch size in params.yaml"
        return DeviceOutOfMemory(f"out of memory ({memory_detail(exc)}). Nothing partial was written: {lower}, or "
                                 "free the device of other processes, then re-run `dvc repro`")
    return DeviceLost(f"the device failed ({first_line(exc)}): this process cannot use it any more. Nothing "
                      "partial was written: check the GPU (`nvidia-smi`), then re-run `dvc repro` on this GPU or "
                      "another one (CUDA_VISIBLE_DEVICES=1 dvc repro)")
