"""The interface every recommender implements, so that one trainer and one evaluator serve all."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np
import torch
from torch import nn

from pipeline.data.splits import Split


class ModelConfig:
    """``to_dict`` / ``from_dict`` for the models' dataclass configs (checkpoints store them as JSON);
    an unknown key is a ValueError that names it and the known ones."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(d) - set(fields)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} setting(s) {sorted(unknown)}; known: {sorted(fields)}")
        d = dict(d)
        for name, value in d.items():
            # YAML 1.1 reads 5e-5 (no dot) as a string, as `dvc exp run -S ...=5e-5` writes it: a number here
            if fields[name].type in ("float", float) and isinstance(value, str):
                try:
                    d[name] = float(value)
                except ValueError:
                    raise ValueError(f"{name}: expected a number, got {value!r}") from None
        return cls(**d)


# What ``Recommender.rank`` returns where no valid item fills a slot (the metrics count it as a miss).
INVALID = -1

# What a model may read besides the training splits (``Recommender.reads``); the model folder stores each.
# READS_TOKENIZER: the trained tokenizer behind the IDs and the item vectors it reads, for a model that trains
# the tokenizer further (ETEGRec); its weights then travel inside the model's own weights.
READS_SEMANTIC_IDS, READS_CODEBOOKS, READS_TOKENIZER = "semantic_ids", "codebooks", "tokenizer"


@dataclass
class ModelInputs:
    """The data a model is built from: from upstream stages when training, from its own folder afterwards."""
    n_items: int
    item_codes: torch.Tensor | None = None  # (N, D) semantic IDs in item-id order, collision level included
    codebook_size: int | None = None  # K
    codebooks: torch.Tensor | None = None  # (L, K, e) the tokenizer's codebooks
    # the trained tokenizer (pipeline.tokenizers.rqvae.RQVAE); None when loading a folder
    tokenizer: nn.Module | None = None
    item_vectors: torch.Tensor | None = None  # (N, in_dim) what the tokenizer reads, in item-id order


class EpochSums:
    """Training statistics summed over an epoch where they are computed (on the device: read once per
    epoch, no synchronisation per step). Models record into one from their forward pass and read it in
    ``epoch_diagnostics``; ``take`` returns the sums and starts the next epoch."""

    def __init__(self):
        self._sums: dict[str, torch.Tensor] = {}

    def add(self, **values: torch.Tensor) -> None:
        for key, value in values.items():
            self._sums[key] = self._sums[key] + value if key in self._sums else value

    def take(self) -> dict[str, torch.Tensor]:
        sums, self._sums = self._sums, {}
        return sums


@dataclass(frozen=True)
class Phase:
    """A stretch of training: ``epochs`` epochs of ``loss`` (a method name of the model) on the parameters
    whose names ``trains`` accepts (all when None). A model's phases repeat in order up to train.epochs."""
    name: str
    epochs: int
    loss: str = "loss"
    trains: Callable[[str], bool] | None = None


class Recommender(nn.Module):
    """A model the shared trainer can fit and the shared evaluator can rank with.

    - ``make_batch``: tensors for samples ``idx`` of a split, on ``device`` (method-specific inputs);
    - ``loss``: the training loss of a batch (a scalar);
    - ``rank``: (B, k) item ids per sample, best first; -1 where no valid item fills a slot.

    The registry (``pipeline.models.registry``) builds a model from its class attributes:
    - ``reads``: the inputs beyond the splits (``READS_SEMANTIC_IDS``, ``READS_CODEBOOKS``, ``READS_TOKENIZER``);
    - ``config_class``: its settings (the params block's ``backbone`` plus the sizes ``sizes`` derives);
    - ``from_inputs``: the model from a config and the inputs;
    - ``fits_itself``: True for a model fitted by ``fit(train_split)`` instead of the trainer (popularity).
    """
    reads: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type[ModelConfig]]
    fits_itself: ClassVar[bool] = False

    @classmethod
    def sizes(cls, inputs: ModelInputs, max_history: int) -> dict:
        """The config values that come from the data, not from the params block."""
        return {"n_items": inputs.n_items}

    @classmethod
    def from_inputs(cls, config: ModelConfig, inputs: ModelInputs) -> "Recommender":
        """The model from its config and inputs; a model that reads nothing beyond the splits needs no more."""
        return cls(config)

    def phases(self, epochs: int) -> list[Phase]:
        """Training phases, repeated in order up to ``epochs``; one phase of the whole model by default."""
        return [Phase("train", max(epochs, 1))]

    def current_phase(self, scheduled: Phase) -> Phase:
        """The phase to train now, given the scheduled one: a model may replace it from its own state (ETEGRec
        trains only its recommender once its tokenizer has converged); the scheduled one by default."""
        return scheduled

    def optimizer_settings(self, name: str, lr: float, weight_decay: float) -> tuple[float, float]:
        """(learning rate, weight decay) of parameter ``name``, given the train block's (weight decay already 0
        for biases and norms): the same for every parameter by default; ETEGRec gives its tokenizer its own."""
        return lr, weight_decay

    def end_of_epoch(self, epoch: int, phase: Phase) -> None:
        """Called after each training epoch, before validation (e.g. to re-derive IDs and the prefix index)."""

    def exports(self) -> dict[str, torch.Tensor]:
        """Tensors written beside the trained weights as ``<name>.safetensors`` for other stages to read
        (SASRec's item embeddings, which a tokenizer such as LETTER's takes as input)."""
        return {}

    def fit(self, train: Split) -> "Recommender":
        raise NotImplementedError(f"{type(self).__name__} is trained by the trainer, not by fit()")

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
