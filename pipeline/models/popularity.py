"""Most-popular baseline: every user gets the same list, the items with the most training interactions.

What is counted: the training interactions of every user, i_1 .. i_{n-2} in docs/method_reference.md §1's
leave-one-out notation, read from the training split alone:

- every training target (i_2 .. i_{n-2}, each exactly once: training samples are every prefix);
- plus each user's first item i_1, which is never a target. It is the whole history of the user's
  first training sample (i_1) -> i_2, the only training sample whose history has one item when
  ``max_history >= 2``. (With ``max_history == 1`` every history has one item; the first such sample
  of the user in split order is taken, which the filter stage writes in time order.)

No leakage: the validation target i_{n-1} and the test target i_n are never training targets of the same
user (docs/method_reference.md §1) and never in a training history, and only the training split is read. The
histories of the training split are not counted item by item, because each interaction appears in up
to ``max_history`` of them (that would weight items by how early they come in a sequence). A user with
fewer than 4 items has no training sample and adds nothing (the 5-core filter leaves none).
"""
from __future__ import annotations

import numpy as np
import torch

from pipeline.data.splits import Split
from pipeline.models.base import INVALID, ModelConfig, ModelInputs, Positive, Recommender


def training_interaction_counts(train: Split, n_items: int) -> np.ndarray:
    """(n_items,) int64: how often each item occurs among the training interactions (module docstring)."""
    targets = np.asarray(train.targets, dtype=np.int64)
    lengths = train.offsets[1:] - train.offsets[:-1]
    single = np.flatnonzero(lengths == 1)
    # first single-item-history sample of each user (np.unique returns first occurrences)
    _, first = np.unique(train.users[single], return_index=True)
    first_items = train.values[train.offsets[single[first]]].astype(np.int64)
    counted = np.concatenate([targets, first_items])
    if counted.size and (counted.min() < 0 or counted.max() >= n_items):
        raise ValueError(f"training item ids must lie in [0, {n_items}); "
                         f"found {int(counted.min())}..{int(counted.max())}")
    return np.bincount(counted, minlength=n_items).astype(np.int64)


class PopularityConfig(ModelConfig):
    n_items: Positive


class MostPopular(Recommender):
    """No trainable parameters: ``fit`` fills the ``counts`` buffer (saved with the weights)."""
    config_class = PopularityConfig
    fits_itself = True

    @classmethod
    def from_inputs(cls, config: PopularityConfig, inputs: ModelInputs) -> "MostPopular":
        return cls(config.n_items)

    def __init__(self, n_items: int):
        super().__init__()
        if n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {n_items}")
        self.n_items = n_items
        self.config = PopularityConfig(n_items=n_items)
        self.register_buffer("counts", torch.zeros(n_items, dtype=torch.int64))

    def fit(self, train: Split) -> "MostPopular":
        counts = training_interaction_counts(train, self.n_items)
        self.counts.copy_(torch.as_tensor(counts))
        return self

    def make_batch(self, split: Split, idx: np.ndarray, device) -> dict[str, torch.Tensor]:
        """Only ``target`` (B,): the list does not depend on the history; B is its length."""
        idx = np.asarray(idx, dtype=np.int64)
        return {"target": torch.as_tensor(split.targets[idx].astype(np.int64), device=device)}

    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError("MostPopular has nothing to train: call fit(train_split) instead of the trainer")

    def top_items(self, k: int) -> torch.Tensor:
        """(k,) item ids by descending count, ties by lower item id; ``-1`` past the catalogue."""
        # A stable sort keeps equal counts in id order, so ties go to the lower id, deterministically.
        order = torch.sort(self.counts, descending=True, stable=True).indices[:k]
        if k > order.numel():
            order = torch.cat([order, torch.full((k - order.numel(),), INVALID, dtype=order.dtype,
                                                 device=order.device)])
        return order

    @torch.no_grad()
    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        B = batch["target"].shape[0]
        return self.top_items(k).to(batch["target"].device)[None, :].expand(B, k).clone()
