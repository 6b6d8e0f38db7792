"""Ranking a split with any recommender: the one code path behind validation and the test evaluation."""
from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from pipeline.data.splits import Split
from pipeline.models.base import Recommender
from pipeline.runtime.precision import autocast


@torch.no_grad()
def rank_split(model: Recommender, split: Split, k: int, batch_size: int, device: torch.device,
               idx: np.ndarray | None = None, progress: bool = False, desc: str = "rank",
               precision: str = "auto") -> np.ndarray:
    """(n, k) ranked item ids for the samples ``idx`` of ``split`` (all by default)."""
    model.eval()
    idx = np.arange(len(split)) if idx is None else idx
    out = []
    chunks = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    for chunk in tqdm(chunks, desc=desc, disable=not progress, leave=False):
        with autocast(device, precision):
            out.append(model.rank(model.make_batch(split, chunk, device), k).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, k), dtype=np.int64)
