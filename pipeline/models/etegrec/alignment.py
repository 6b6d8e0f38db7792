"""Alignment losses between a recommender and its tokenizer, shared by the methods that train the two
together or regularise one by the other (the ETEGRec paper, §4.2.3; LETTER's collaborative regulariser).

- ``symmetric_kl``: KL(P || Q) + KL(Q || P) between two batches of per-level code distributions given as
  logits (ETEGRec's sequence-item alignment, SIA: the target item's code distribution against the one the
  tokenizer gives the pooled encoder states).
- ``code_logits``: those logits, -||v - e_k||^2 over a level's codes (ETEGRec paper, Eq. for P^l), or the
  official code's +||v - e_k||^2 as a switch (``sign=+1``).
- ``symmetric_info_nce``: in-batch InfoNCE in both directions with cosine similarity over a temperature
  (ETEGRec's preference-semantic alignment, PSA; LETTER's collaborative regulariser), where rows that share
  a target id are not each other's negatives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def code_logits(residuals: torch.Tensor, codebooks: torch.Tensor, sign: float = -1.0) -> torch.Tensor:
    """Logits of each level's code distribution: ``sign * ||v_l - e^l_k||^2``.

    residuals: (B, L, e), the vector each level quantises; codebooks: (L, K, e). Returns (B, L, K).
    ``sign=-1`` is the paper's softmax of negative squared distances (near codes likely); ``+1`` the
    official code's reading."""
    # ||v||^2 - 2 v.e + ||e||^2: one batched matmul per level. The broadcast difference would build a (B, L, K, e)
    # tensor, e times the distances' size, and its backward: far slower, in every step.
    distances = (residuals.pow(2).sum(-1, keepdim=True) - 2 * torch.einsum("ble,lke->blk", residuals, codebooks)
                 + codebooks.pow(2).sum(-1)[None]).clamp_min(0.0)
    return sign * distances


def symmetric_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, levels: str = "sum") -> torch.Tensor:
    """KL(P || Q) + KL(Q || P) per level, summed (``levels="sum"``: the paper's sum over levels) or averaged
    (``"mean"``: the official code's batchmean over batch x levels) over the levels, averaged over the batch;
    logits (B, L, K)."""
    log_p = F.log_softmax(logits_p.float(), dim=-1)
    log_q = F.log_softmax(logits_q.float(), dim=-1)
    p, q = log_p.exp(), log_q.exp()
    per_level = (p * (log_p - log_q)).sum(-1) + (q * (log_q - log_p)).sum(-1)  # (B, L)
    if levels not in ("sum", "mean"):
        raise ValueError(f"levels must be 'sum' or 'mean', got {levels!r}")
    return (per_level.sum(-1) if levels == "sum" else per_level.mean(-1)).mean()


def symmetric_info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float,
                       ids: torch.Tensor | None = None, directions: str = "mean") -> torch.Tensor:
    """Mean (``directions="mean"``) or sum (``"sum"``: the official ETEGRec code) of InfoNCE(a -> b) and
    InfoNCE(b -> a) over the batch: row i of ``a`` should pick row i of ``b`` among the batch's rows by cosine
    similarity / temperature. ``ids`` (B,): rows with the same id (the same target item twice in a batch) are
    not negatives of each other."""
    if directions not in ("sum", "mean"):
        raise ValueError(f"directions must be 'sum' or 'mean', got {directions!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    sim = F.normalize(a.float(), dim=-1) @ F.normalize(b.float(), dim=-1).T / temperature  # (B, B)
    if ids is not None:
        duplicate = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
        sim = sim.masked_fill(duplicate, float("-inf"))
    target = torch.arange(sim.shape[0], device=sim.device)
    both = F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)
    return both if directions == "sum" else 0.5 * both
