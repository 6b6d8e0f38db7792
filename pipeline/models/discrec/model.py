"""DiscRec (Liu et al., "Disentangled Semantic-Collaborative Modeling for Generative Recommendation", §III):
TIGER with a dual-branch embedding module in front of the stock T5 encoder and decoder. Everything after
the embeddings (T5, loss, constrained decoder, trainer, evaluator) is TIGER's; DiscRec-T reads the RQ-VAE's
IDs, DiscRec-L LETTER's (a params block's ``inputs``).

For the tokens of a sequence (the encoder's history items then EOS; the decoder's BOS then the codes):

- **Item-level positions** ``V`` (Eqs. 15-16): a table of D + 2 rows, row l for the l-th token of any item,
  one row for EOS and one for BOS (``pipeline.models.discrec.locality``).
- **Semantic branch** (Eq. 19): the token embeddings ``E``.
- **Collaborative branch** (Eqs. 20-22): one Transformer layer on ``E + V`` whose attention is restricted
  to the tokens of the same item (EOS joins the last history item, BOS the item it starts; bidirectional in
  the encoder, causal in the decoder). The paper's layer: 2 heads, attention dimension 64 (d_model 128 / 2),
  FFN 1024, ReLU, dropout 0.1 (§IV-A4); PyTorch's ``TransformerEncoderLayer`` (post-norm, our reading).
- **Gate** (Eqs. 23-26): learned vectors ``G_sem``, ``G_col``; per token the weights
  ``softmax(B_sem . G_sem, B_col . G_col)`` mix the two branches. ``G`` starts at 0: an even mix (our choice).

The ablations of Table III are switches: ``item_positions: false`` (w/o IPE: the branch reads ``E``),
``localized_transformer: false`` (w/o TF: the branch is ``E + V`` without the Transformer), ``fusion: sum``
(w/o gating: ``B_sem + B_col``). ``fusion: semantic`` keeps only the semantic branch: TIGER's logits exactly
(tested).

The decoder branch attends within the item being generated, so an incremental search step needs the whole
prefix: ``embed_decoder_last`` re-runs the (one-layer, D-token) branch on it; the T5 decoder keeps its cache.
"""
from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from pipeline.models.base import READS_SEMANTIC_IDS, EpochSums
from pipeline.models.discrec.locality import decoder_items, encoder_items, local_attention_mask
from pipeline.models.tiger.model import Tiger, TigerConfig


class DiscrecConfig(TigerConfig):
    item_positions: bool = True  # Table III "w/o IPE": false
    localized_transformer: bool = True  # Table III "w/o TF": false
    # gate (Eqs. 23-26) | sum (Table III "w/o Gating") | semantic (TIGER: the test switch)
    fusion: Literal["gate", "sum", "semantic"] = "gate"
    # §IV-A4: 2 heads (attention dimension d_model / heads = 64 at d_model 128)
    branch_heads: Annotated[int, Field(strict=True, ge=1)] = 2
    # §IV-A4: MLP hidden size 1024, ReLU; dropout is the backbone's (0.1)
    branch_ff: Annotated[int, Field(strict=True, ge=1)] = 1024

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.d_model % self.branch_heads:
            raise ValueError(f"branch_heads must divide d_model ({self.d_model}), got {self.branch_heads}")
        return self


class Discrec(Tiger):
    reads = (READS_SEMANTIC_IDS,)
    config_class = DiscrecConfig

    def __init__(self, config: DiscrecConfig, item_codes: torch.Tensor):
        super().__init__(config, item_codes)  # T5 first: with fusion "semantic" its weights are TIGER's of one seed
        self._gate_sums = EpochSums()  # the collaborative branch's gate weight over real tokens
        if config.fusion == "semantic":
            return
        # only the parts a switch keeps: an unused parameter would stop DistributedDataParallel
        d = config.d_model
        if config.item_positions:  # V: rows 0..D-1 the item's tokens, D EOS, D + 1 BOS
            self.positions = nn.Embedding(config.depth + 2, d)
        if config.localized_transformer:
            self.branch = nn.TransformerEncoderLayer(d, config.branch_heads, config.branch_ff, config.dropout,
                                                     activation="relu", batch_first=True)
        if config.fusion == "gate":
            self.gate = nn.Parameter(torch.zeros(2, d))  # G = [G_sem; G_col]

    # ----- the dual-branch module M(E, V) ---------------------------------------------------------
    def _fuse(self, embeds: torch.Tensor, item: torch.Tensor, position: torch.Tensor, causal: bool,
              side: str) -> torch.Tensor:
        cfg = self.config
        branch = embeds + self.positions(position) if cfg.item_positions else embeds
        if cfg.localized_transformer:
            blocked = ~local_attention_mask(item, causal)  # True = may not attend
            branch = self.branch(branch, src_mask=blocked.repeat_interleave(cfg.branch_heads, dim=0))
        if cfg.fusion == "sum":
            return embeds + branch
        both = torch.stack([embeds, branch], dim=-2)  # (B, T, 2, d)
        weights = torch.softmax((both * self.gate.to(both.dtype)).sum(-1).float(), dim=-1)  # (B, T, 2)
        self._record_gate(side, weights[..., 1], item)
        return (weights.to(both.dtype)[..., None] * both).sum(-2)

    @torch.compiler.disable
    def _record_gate(self, side: str, collaborative: torch.Tensor, item: torch.Tensor) -> None:
        """The collaborative branch's weight over the epoch's real tokens (summed on the device)."""
        if not self.training:
            return
        real = item >= 0
        self._gate_sums.add(**{f"{side}_sum": (collaborative.detach() * real).sum(), f"{side}_n": real.sum()})

    def epoch_diagnostics(self) -> dict[str, float]:
        sums = self._gate_sums.take()
        return {f"gate_collaborative_{side}": float(sums[f"{side}_sum"]) / max(1.0, float(sums[f"{side}_n"]))
                for side in ("encoder", "decoder") if f"{side}_n" in sums}

    # ----- TIGER's embedding hooks ----------------------------------------------------------------
    def embed_encoder(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        embeds = self.t5.shared(batch["input_ids"])
        if self.config.fusion == "semantic":
            return embeds
        # the history length from the mask: its D tokens per item, then EOS (Tiger.make_batch)
        lengths = torch.div(batch["attention_mask"].sum(1) - 1, self.config.depth, rounding_mode="floor")
        item, position = encoder_items(lengths, self.config.depth, embeds.shape[1])
        return self._fuse(embeds, item, position, causal=False, side="encoder")

    def embed_decoder(self, tokens: torch.Tensor, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        embeds = self.t5.shared(tokens)
        if self.config.fusion == "semantic":
            return embeds
        if step != 0:
            raise ValueError("DiscRec embeds decoder inputs from BOS on (its branch attends within the item); "
                             "use embed_decoder_last for one search step")
        item, position = decoder_items(tokens.shape[0], tokens.shape[1], self.config.depth, tokens.device)
        return self._fuse(embeds, item, position, causal=True, side="decoder")

    def embed_decoder_last(self, prefix: torch.Tensor, batch: dict[str, torch.Tensor], step: int) -> torch.Tensor:
        if self.config.fusion == "semantic":
            return super().embed_decoder_last(prefix, batch, step)
        return self.embed_decoder(prefix, batch, 0)[:, -1:]
