"""What a tokenizer kind implements (docs/adding_a_tokenizer.md)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.tokenizer_schemas import TokenizerSchema


@dataclass(frozen=True)
class DerivedCodes:
    """Every item's codes as a tokenizer assigns them, before TIGER's collision token (§3.1) makes them unique."""
    codes: np.ndarray  # (N, L) integers in [0, codebook_size), row i = item i
    codebook_size: int  # K
    # (L, K, e) code vectors, for DECOR's semantic embedding table (docs/method_reference.md §5); None: the kind
    # has no code vectors (then a method that needs them cannot use its IDs)
    codebooks: torch.Tensor | None = None
    stats: dict = field(default_factory=dict)  # the kind's own statistics, after the common ones


class TokenizerKind:
    """A tokenizer kind: the schema of its ``tokenizers.<name>`` block, its training and its codes.

    Stateless: the stages call the class's methods with the block (an instance of ``params``)."""

    params: type[TokenizerSchema]

    @classmethod
    def train(cls, block: TokenizerSchema, seed: int, out_dir: Path, curve_path: Path,
              log: Callable[[str], None] = print,
              on_epoch: Callable[[int, dict], None] | None = None) -> dict:
        """``tokenize@<name>``: build the tokenizer from ``block.inputs`` into ``out_dir`` (atomically:
        ``pipeline.io.atomic_dir``), write its per-epoch curve to ``curve_path`` (CSV, ``pipeline.io.write_curve``)
        and return its final metrics (numbers: ``metrics/tokenize_<name>.json``)."""
        raise NotImplementedError

    @classmethod
    def derive_ids(cls, block: TokenizerSchema, tokenizer_dir: Path,
                   log: Callable[[str], None] = print) -> DerivedCodes:
        """``semantic_ids@<name>``: every catalogue item's codes from the tokenizer ``train`` wrote."""
        raise NotImplementedError
