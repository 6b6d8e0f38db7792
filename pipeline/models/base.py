"""The interface every recommender implements, so that one trainer and one evaluator serve all."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.recdata import Split


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
