"""The one data path every recommender reads: the filter stage's split tables as flat arrays.

A split is (user, history, target) samples; histories are kept as one flat array plus offsets (the
Parquet list layout), and batches are cut from it with index arithmetic, so no per-sample Python
objects exist even for millions of training samples.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq
import torch


@dataclass
class Split:
    users: np.ndarray  # (S,) int64
    offsets: np.ndarray  # (S + 1,) int64 into values
    values: np.ndarray  # flat history item ids, int64
    targets: np.ndarray  # (S,) int64

    def __len__(self) -> int:
        return len(self.targets)

    def lengths(self, idx: np.ndarray) -> np.ndarray:
        return self.offsets[idx + 1] - self.offsets[idx]

    def histories(self, idx: np.ndarray, max_len: int, pad: int = -1) -> tuple[np.ndarray, np.ndarray]:
        """(B, max_len) item ids, oldest first and right-padded with ``pad``; and the lengths.

        Histories longer than ``max_len`` keep their most recent items.
        """
        idx = np.asarray(idx, dtype=np.int64)
        lengths = np.minimum(self.lengths(idx), max_len)
        starts = self.offsets[idx + 1] - lengths
        out = np.full((len(idx), max_len), pad, dtype=np.int64)
        cols = np.arange(max_len)
        valid = cols[None, :] < lengths[:, None]
        out[valid] = self.values[(starts[:, None] + cols[None, :])[valid]]
        return out, lengths

    def batches(self, batch_size: int, shuffle: bool = False, generator: np.random.Generator | None = None
                ) -> Iterator[np.ndarray]:
        order = generator.permutation(len(self)) if shuffle else np.arange(len(self))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]

    def seen_items(self) -> list[np.ndarray]:
        """Per sample, the items of its history (for the optional seen-item masking)."""
        return [self.values[self.offsets[i] : self.offsets[i + 1]] for i in range(len(self))]


class DeviceSplit:
    """A split held as tensors on the training device, so that the trainer cuts every batch there: no
    per-step host work and no host-to-device copy per step (on a GPU the step is bound by launches, not
    arithmetic). ``histories`` computes exactly what :meth:`Split.histories` computes, with torch ops.

    ``static_width``: batches keep the full width (``max_len`` history slots) instead of the longest
    history of the batch. Every step then has one shape, which CUDA graphs and ``torch.compile`` need, and
    the batch needs no host sync to find its longest history; the extra columns are padding, which the
    models mask.
    """

    def __init__(self, split: Split, device: torch.device, static_width: bool = False, width: int | None = None):
        self.device, self.static_width, self.width = torch.device(device), static_width, width
        self.users = torch.as_tensor(split.users, device=self.device)
        self.offsets = torch.as_tensor(split.offsets, device=self.device)
        self.values = torch.as_tensor(split.values, device=self.device)
        self.targets = torch.as_tensor(split.targets, device=self.device)

    def with_width(self, width: int) -> "DeviceSplit":
        """The same tensors, batches cut ``width`` history slots wide (static): the trainer's length-grouped
        batches, whose longest history it knows from the host's offsets without asking the device."""
        view = copy.copy(self)
        view.static_width, view.width = True, width
        return view

    def __len__(self) -> int:
        return len(self.targets)

    def lengths(self, idx: torch.Tensor) -> torch.Tensor:
        return self.offsets[idx + 1] - self.offsets[idx]

    def histories(self, idx: torch.Tensor, max_len: int, pad: int = -1) -> tuple[torch.Tensor, torch.Tensor]:
        lengths = self.lengths(idx).clamp(max=max_len)
        starts = self.offsets[idx + 1] - lengths
        cols = torch.arange(min(max_len, self.width or max_len), device=self.device)
        valid = cols[None, :] < lengths[:, None]
        # clamp: positions past a history's end read a real slot and are then overwritten with ``pad``
        gathered = self.values[(starts[:, None] + cols[None, :]).clamp(max=max(len(self.values) - 1, 0))]
        return torch.where(valid, gathered, torch.full_like(gathered, pad)), lengths


def load_split(path: str | Path) -> Split:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the filter stage first (dvc repro filter)")
    table = pq.read_table(path)
    for col in ("user_id", "history", "target"):
        if col not in table.column_names:
            raise ValueError(f"{path}: missing column {col!r}; re-run the filter stage")
    history = table.column("history").combine_chunks()
    return Split(
        users=table.column("user_id").to_numpy().astype(np.int64),
        offsets=history.offsets.to_numpy().astype(np.int64),
        values=history.values.to_numpy().astype(np.int64),
        targets=table.column("target").to_numpy().astype(np.int64),
    )


def load_splits(seq_dir: str | Path) -> dict[str, Split]:
    return {name: load_split(Path(seq_dir) / f"{name}.parquet") for name in ("train", "valid", "test")}
