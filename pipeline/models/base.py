"""The interface every recommender implements, so that one trainer and one evaluator serve all."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from pipeline.recdata import Split


class ModelConfig:
    """``to_dict`` / ``from_dict`` for the models' dataclass configs (checkpoints store them as JSON);
    an unknown key is a ValueError that names it and the known ones."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown {cls.__name__} setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)


class Recommender(nn.Module):
    """A model the shared trainer can fit and the shared evaluator can rank with.

    - ``make_batch``: tensors for samples ``idx`` of a split, on ``device`` (method-specific inputs);
    - ``loss``: the training loss of a batch (a scalar);
    - ``rank``: (B, k) item ids per sample, best first; -1 where no valid item fills a slot.
    """

    def make_batch(self, split: Split, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def epoch_diagnostics(self) -> dict[str, float]:
        """Figures gathered during the epoch's training steps, logged with its row (e.g. DECOR's
        composition weights); resets them."""
        return {}

    @torch.no_grad()
    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        raise NotImplementedError
