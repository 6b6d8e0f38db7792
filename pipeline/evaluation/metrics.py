"""Recall@K, NDCG@K and invalid@K over ranked item lists (docs/method_reference.md §1).

Full ranking, item-level matching, averaged over all users (sum / number of users). A ranked list
holds item ids; ``-1`` marks a slot with no valid item (a beam that is not a real item, or a list
shorter than K): it can never match, and its share is ``invalid@K``.
"""
from __future__ import annotations

import numpy as np

from pipeline.models.base import INVALID


def target_ranks(ranked: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1-based rank of each target in its list, 0 when absent. ``ranked``: (U, N) item ids."""
    hits = ranked == targets[:, None]
    hits &= ranked != INVALID
    any_hit = hits.any(axis=1)
    return np.where(any_hit, hits.argmax(axis=1) + 1, 0)


def user_gains(ranks: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-user hit@k and NDCG@k from 1-based target ranks (0 = not in the list): one leave-one-out target,
    so the ideal DCG is 1 and NDCG@k = 1 / log2(rank + 1) for a hit."""
    hit = (ranks >= 1) & (ranks <= k)
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(np.maximum(ranks, 1) + 1), 0.0)


def ranking_metrics(ranked: np.ndarray, targets: np.ndarray, ks=(5, 10)) -> dict[str, float]:
    ranks = target_ranks(ranked, targets)
    n = len(targets)
    out: dict[str, float] = {}
    for k in ks:
        if ranked.shape[1] < k:
            raise ValueError(f"ranked lists have {ranked.shape[1]} items, fewer than K={k}: raise the beam size")
        hit, ndcg = user_gains(ranks, k)
        out[f"recall@{k}"] = float(hit.sum() / n)
        out[f"ndcg@{k}"] = float(ndcg.sum() / n)
        out[f"invalid@{k}"] = float((ranked[:, :k] == INVALID).sum() / (n * k))
    return out


def mask_seen(ranked: np.ndarray, seen: list[np.ndarray]) -> np.ndarray:
    """Drop each user's already-seen items from their list (RecBole's policy; off in the papers),
    shifting later items up and padding with INVALID."""
    out = np.full_like(ranked, INVALID)
    for u, (row, s) in enumerate(zip(ranked, seen)):
        keep = row[~np.isin(row, s)]
        out[u, : len(keep)] = keep
    return out
