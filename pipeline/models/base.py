"""The interface every recommender implements, so that one trainer and one evaluator serve all."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Callable, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from pipeline.data.splits import Split

# An integer setting of at least 1 (strict: a bool is not one, YAML's `true` is no layer count).
Positive = Annotated[int, Field(strict=True, ge=1)]


class ModelConfig(BaseModel):
    """A model's settings: the params block's ``backbone`` plus the sizes its data gives (``Recommender.sizes``).

    The same typed, range-checked schema as params.yaml's (pydantic, ``pipeline.config``): an unknown key, a
    value of the wrong type or out of range is a ValueError naming the setting. Checkpoints store it as JSON
    (``to_dict`` / ``from_dict``). A numeric string is a number: YAML 1.1 reads 5e-5 (no dot) as a string, as
    ``dvc exp run -S ...=5e-5`` writes it."""
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def to_dict(self) -> dict:
        return self.model_dump()

    @classmethod
    def from_dict(cls, d: dict):
        return cls._validated(d, partial=False)

    @classmethod
    def check_settings(cls, settings: dict) -> None:
        """Check the settings a params block gives, before the sizes that come from the data are known: every
        key known and every value of its type and range (checks across settings run when the model is built)."""
        cls._validated(settings, partial=True)

    @classmethod
    def _validated(cls, settings: dict, partial: bool):
        """The config, or a ValueError naming each bad setting; ``partial``: the missing (data-given) sizes are
        not errors and nothing is returned."""
        unknown = set(settings) - set(cls.model_fields)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} setting(s) {sorted(unknown)}; known: {sorted(cls.model_fields)}")
        try:
            return cls.model_validate(settings)
        except ValidationError as exc:
            errors = [e for e in exc.errors() if not (partial and e["type"] == "missing")]
            if errors:
                raise ValueError(config_errors(exc, errors)) from None
        return None


def config_errors(exc: ValidationError, errors: list | None = None) -> str:
    """pydantic's errors as one line per setting: ``dropout: Input should be less than 1, got 1.5``."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg'].removeprefix('Value error, ')}"
                     + (f", got {e['input']!r}" if e["type"] != "missing" and e["loc"] else "")
                     for e in (errors if errors is not None else exc.errors()))


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
class Restart:
    """What a phase starts afresh (ETEGRec's fine-tuning, the official trainer's ``finetune``): a new AdamW at
    ``lr`` / ``weight_decay`` with its own warm-up and cosine schedule over the epochs left in the budget, and a
    new early-stopping count and best score; ``from_best``: from the best validated weights so far."""
    lr: float
    weight_decay: float
    warmup_steps: int = 0
    from_best: bool = True


@dataclass(frozen=True)
class Phase:
    """A stretch of training: ``epochs`` epochs of ``loss`` (a method name of the model) on the parameters
    whose names ``trains`` accepts (all when None). A model's phases repeat in order up to train.epochs.
    ``restart``: the phase begins with a fresh optimizer and schedule (``Restart``), once, at its first epoch;
    a model's phases with a restart are its last ones, not repeated."""
    name: str
    epochs: int
    loss: str = "loss"
    trains: Callable[[str], bool] | None = None
    restart: Restart | None = None


class Recommender(nn.Module):
    """A model the shared trainer can fit and the shared evaluator can rank with.

    - ``make_batch``: tensors for samples ``idx`` of a split, on ``device`` (method-specific inputs);
    - ``loss``: the training loss of a batch (a scalar);
    - ``rank``: (B, k) item ids per sample, best first; -1 where no valid item fills a slot.

    The registry (``pipeline.models.registry``) builds a model from its class attributes:
    - ``reads``: the inputs beyond the splits (``READS_SEMANTIC_IDS``, ``READS_CODEBOOKS``, ``READS_TOKENIZER``);
    - ``config_class``: its settings (the params block's ``backbone`` plus the sizes ``sizes`` derives, named
      by ``data_settings``);
    - ``from_inputs``: the model from a config and the inputs;
    - ``fits_itself``: True for a model fitted by ``fit(train_split)`` instead of the trainer (popularity).
    """
    reads: ClassVar[tuple[str, ...]] = ()
    config_class: ClassVar[type[ModelConfig]]
    # The settings of ``config_class`` that ``sizes`` derives from the data: a params block may not set them.
    data_settings: ClassVar[tuple[str, ...]] = ("n_items",)
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
