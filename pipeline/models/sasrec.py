"""SASRec (docs/method_reference.md §9; Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).

Causal self-attention over a user's item ids; the hidden state at the most recent history item is
scored against every item embedding (the same table as the input, as in the paper), and trained with
next-item cross-entropy over all items. Training samples of this pipeline are already every prefix
-> next item (docs/method_reference.md §1), so one target per sample is the whole objective.

Layout of a batch: histories are right-padded (``Split.histories``), oldest first; the padding id is
``n_items`` (the extra last row of the item table, kept at zero by ``padding_idx``), so item ids are
used as they are, without a shift. The sequence representation is gathered at slot ``length - 1``.

Positions count back from the most recent item (0 = most recent, 1 = the one before, ...). This is what
the paper's left-padded fixed-length window gives (the most recent item always sits in the last slot and
so always gets the same position embedding); with right padding it must be computed from the lengths.
Right padding is kept because every query slot then sees at least slot 0 (a real item) under the causal
mask, so no attention row is fully masked (a fully masked row would give NaN).

The item table without the padding row, :meth:`SASRec.item_embeddings`, is the collaborative embedding
that LETTER's regulariser and ETEGRec's tokenizer input need (docs/method_reference.md §8, §2).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from pipeline.data.splits import DeviceSplit, Split
from pipeline.models.base import INVALID, ModelConfig, ModelInputs, Positive, Recommender


class SASRecConfig(ModelConfig):
    n_items: Positive
    # history length of docs/method_reference.md §1 (TIGER, DECOR, DiscRec, LETTER); the paper uses 50 on Amazon
    max_len: Positive = 20
    # Our choice: a power of two in the 64-256 range docs/method_reference.md §9 gives (the paper uses d = 50).
    hidden: Positive = 64
    n_blocks: Positive = 2  # paper: 2 self-attention blocks
    n_heads: Positive = 2  # docs/method_reference.md §9 allows 1-2; the paper found one head enough, params.yaml uses 2
    # Paper: 0.2 on the dense MovieLens-1M, 0.5 on the sparse Amazon/Steam data. 0.2 is the default here
    # (the dense-data value); set 0.5 in params.yaml to follow the paper on Amazon.
    dropout: float = Field(0.2, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be a positive multiple of n_heads ({self.n_heads})")
        return self


def position_ids(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B, width) position of each slot of right-padded histories: how many items come after it
    (0 = the most recent item), as a left-padded window gives; padding slots get 0 (never used)."""
    slots = torch.arange(width, device=lengths.device)
    return (lengths[:, None] - 1 - slots[None, :]).clamp(min=0)


class SASRec(Recommender):
    config_class = SASRecConfig
    data_settings = ("n_items", "max_len")

    @classmethod
    def sizes(cls, inputs: ModelInputs, max_history: int) -> dict:
        return {"n_items": inputs.n_items, "max_len": max_history}

    def __init__(self, config: SASRecConfig):
        super().__init__()
        self.config = config
        n, d = config.n_items, config.hidden
        self.pad = n  # padding id: the last row of the item table
        self.item_emb = nn.Embedding(n + 1, d, padding_idx=self.pad)
        self.pos_emb = nn.Embedding(config.max_len, d)  # learned positions (paper §III-A)
        self.emb_dropout = nn.Dropout(config.dropout)  # the paper drops out the input embedding too
        # Pre-norm residual blocks, x + Dropout(g(LayerNorm(x))), as in the paper (§III-B, eq. 4); its
        # point-wise feed-forward network is two d x d layers with ReLU, hence dim_feedforward = hidden.
        layer = nn.TransformerEncoderLayer(d_model=d, nhead=config.n_heads, dim_feedforward=d,
                                           dropout=config.dropout, activation="relu", batch_first=True,
                                           norm_first=True)
        # enable_nested_tensor only applies to post-norm layers; off to say so (and avoid its warning)
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.n_blocks, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(d)  # pre-norm blocks leave the last residual stream un-normalised
        self._init_embeddings()

    def _init_embeddings(self) -> None:
        # Small normal init (std 0.02, our choice): with the output tied to the input table, the default
        # N(0, 1) would start with logits of size ~sqrt(d) * |e| and a very large initial loss.
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[self.pad].zero_()

    # ----- inputs ---------------------------------------------------------------------------------
    def make_batch(self, split: Split, idx: np.ndarray, device) -> dict[str, torch.Tensor]:
        """``history`` (B, T) right-padded with ``n_items``, T = the longest history of the batch
        (<= max_len; trimming the all-padding columns changes nothing); ``lengths`` (B,); ``target`` (B,)."""
        if isinstance(split, DeviceSplit):  # the trainer's device split: no host work, no host sync
            hist, lengths = split.histories(idx, self.config.max_len, pad=self.pad)
            width = self.config.max_len if split.static_width else int(lengths.max())
            return {"history": hist[:, :width], "lengths": lengths, "target": split.targets[idx]}
        idx = np.asarray(idx, dtype=np.int64)
        hist, lengths = split.histories(idx, self.config.max_len, pad=self.pad)
        if len(idx) and lengths.min() < 1:
            bad = idx[lengths < 1][:5].tolist()
            raise ValueError(f"SASRec needs at least one history item per sample; samples {bad} have none")
        real = hist[hist != self.pad]
        if real.size and (real.min() < 0 or real.max() >= self.config.n_items):
            raise ValueError(f"history item ids must lie in [0, {self.config.n_items}); "
                             f"found {int(real.min())}..{int(real.max())}")
        width = int(lengths.max()) if len(idx) else 1
        batch = {"history": torch.as_tensor(hist[:, :width]), "lengths": torch.as_tensor(lengths),
                 "target": torch.as_tensor(split.targets[idx].astype(np.int64))}
        return {k: v.to(device) for k, v in batch.items()}

    # ----- the network ----------------------------------------------------------------------------
    def encode(self, history: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) of every slot; those of padding slots are meaningless."""
        B, T = history.shape
        slots = torch.arange(T, device=history.device)
        x = self.emb_dropout(self.item_emb(history) + self.pos_emb(position_ids(lengths, T)))
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=history.device), diagonal=1)  # True = blocked
        padding = slots[None, :] >= lengths[:, None]  # True = padding key
        x = self.encoder(x, mask=causal, src_key_padding_mask=padding)
        return self.final_norm(x)

    def represent(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, d) sequence representation: the hidden state at the most recent history item."""
        lengths = batch["lengths"]
        # checked where it costs no device sync and no graph break (make_batch checks the host splits too)
        if lengths.device.type == "cpu" and not torch.compiler.is_compiling() and lengths.numel() \
                and int(lengths.min()) < 1:
            raise ValueError("SASRec needs at least one history item per sample (a length is 0)")
        hidden = self.encode(batch["history"], lengths)
        last = (lengths - 1).long()
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def scores(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, n_items) logits over all items (the padding row is never a candidate)."""
        return self.represent(batch) @ self.item_emb.weight[: self.config.n_items].T

    # ----- training -------------------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(self.scores(batch).float(), batch["target"])

    # ----- inference ------------------------------------------------------------------------------
    @torch.no_grad()
    def rank(self, batch: dict[str, torch.Tensor], k: int) -> torch.Tensor:
        """(B, k) item ids by descending score over the full catalogue (seen items are not masked);
        slots beyond the catalogue size are ``-1``."""
        scores = self.scores(batch).float()
        top = scores.topk(min(k, self.config.n_items), dim=1).indices
        if k > top.shape[1]:
            top = torch.cat([top, torch.full((top.shape[0], k - top.shape[1]), INVALID, dtype=top.dtype,
                                             device=top.device)], dim=1)
        return top

    def exports(self) -> dict[str, torch.Tensor]:
        return {"item_embeddings": self.item_embeddings()}  # row i = item i

    def item_embeddings(self) -> torch.Tensor:
        """(n_items, hidden) learned item table without the padding row (a detached copy)."""
        return self.item_emb.weight[: self.config.n_items].detach().clone()

