"""Nearest-code search, k-means and Sinkhorn-Knopp: how the RQ-VAE (``pipeline.tokenizers.rqvae``) initialises its
codebooks (TIGER §3.1, k-means on the first batch, following SoundStream) and how LETTER balances the last level
(``pipeline.tokenizers.letter``). Deterministic for a given ``torch.Generator`` state; no numpy RNG."""
from __future__ import annotations

import math

import torch

KMEANS_ITERS = 30  # Lloyd iterations for the initialisation; converges well before on 1024 points


def sq_dists(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """(n, k) squared Euclidean distances; the expanded form avoids an (n, k, d) intermediate."""
    d = (x * x).sum(1, keepdim=True) - 2.0 * x @ centroids.T + (centroids * centroids).sum(1)
    return d.clamp_min_(0.0)


def kmeans(x: torch.Tensor, k: int, *, generator: torch.Generator, iters: int = KMEANS_ITERS) -> torch.Tensor:
    """k-means++ seeding then Lloyd iterations, on CPU in float64; returns (k, d) float32 centroids.

    Deterministic for a given ``generator`` state. Float64 because the expanded distance formula
    loses float32 precision for nearby points; on one batch the cost is negligible. With fewer than
    ``k`` points, the points are resampled with replacement and jittered (1e-3 of the per-dimension
    spread) so that k distinct centroids exist. Empty clusters are re-seeded at the points farthest
    from their centroid.
    """
    x = x.detach().to("cpu", torch.float64)
    n, dim = x.shape
    if n == 0:
        raise ValueError("kmeans: no points")
    if n < k:
        extra = x[torch.randint(n, (k - n,), generator=generator)]
        spread = x.std(0) if n > 1 else torch.zeros(dim, dtype=x.dtype)
        scale = 1e-3 * torch.where(spread > 0, spread, torch.ones_like(spread))
        noise = torch.randn(extra.shape, generator=generator, dtype=x.dtype)
        x = torch.cat([x, extra + scale * noise])
        n = x.shape[0]

    centroids = _greedy_kmeanspp(x, k, generator)

    assign = sq_dists(x, centroids).argmin(1)
    for _ in range(iters):
        sums = torch.zeros(k, dim, dtype=x.dtype).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        filled = counts > 0
        centroids = centroids.clone()  # an empty cluster keeps its centroid unless re-seeded below
        centroids[filled] = sums[filled] / counts[filled].unsqueeze(1).to(x.dtype)
        empty = torch.nonzero(~filled).squeeze(1)
        if len(empty):
            # Re-seed at the worst-served points; only points off their centroid (distance > 0),
            # else the new centroid would duplicate an existing one.
            dist_to_own = sq_dists(x, centroids).gather(1, assign.unsqueeze(1)).squeeze(1)
            far = dist_to_own.topk(len(empty))
            far_idx = far.indices[far.values > 0]
            centroids[empty[:len(far_idx)]] = x[far_idx]
        new_assign = sq_dists(x, centroids).argmin(1)
        if torch.equal(new_assign, assign) and not len(empty):
            break
        assign = new_assign
    return centroids.to(torch.float32)


def _greedy_kmeanspp(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """(k, d) initial centroids, chosen among the points ``x`` (n >= k)."""
    n = x.shape[0]
    # Greedy k-means++ (Arthur & Vassilvitskii, 2007; the variant scikit-learn uses): sample
    # 2 + log(k) candidates with probability ~ D(x)^2 and keep the one that lowers the potential most.
    # Plain k-means++ sometimes seeds two centroids in one well-separated cluster, which Lloyd
    # iterations cannot undo; the greedy choice makes that much rarer.
    n_trials = 2 + int(math.log(k))
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = torch.randint(n, (1,), generator=generator)
    min_d = sq_dists(x, x[chosen[:1]]).squeeze(1)
    for j in range(1, k):
        total = min_d.sum()
        if total > 0:
            candidates = torch.multinomial(min_d / total, n_trials, replacement=True, generator=generator)
        else:  # every point already coincides with a centroid
            candidates = torch.randint(n, (n_trials,), generator=generator)
        trial_d = torch.minimum(min_d.unsqueeze(1), sq_dists(x, x[candidates]))  # (n, n_trials)
        best = int(trial_d.sum(0).argmin())
        chosen[j] = candidates[best]
        min_d = trial_d[:, best].contiguous()
    return x[chosen].clone()


@torch.no_grad()
def sinkhorn_codes(dists: torch.Tensor, epsilon: float, iters: int) -> torch.Tensor:
    """Codes (B,) from a balanced assignment of B points to K codes, given their (B, K) squared distances.

    Sinkhorn-Knopp as LETTER's official code applies it to the last level while training: distances
    rescaled to [-1, 1] (so that ``epsilon`` means the same at any scale), transport plan
    ``exp(-d / epsilon)`` alternately normalised so that every point carries mass 1/B and every code 1/K,
    then each point's largest entry. In float64: exp(-2 / 0.003) underflows float32."""
    d = dists.double()
    middle = (d.max() + d.min()) / 2
    d = (d - middle) / ((d.max() - middle) + 1e-5)
    # exp(-(d - min_k d) / eps) per row: the shift cancels in the row normalisation, and it keeps the row's
    # nearest code at exp(0) instead of an underflow to 0 for every code
    q = torch.exp(-(d - d.min(1, keepdim=True).values) / epsilon)
    B, K = q.shape
    for _ in range(iters):
        q = q / q.sum(1, keepdim=True) / B
        q = q / q.sum(0, keepdim=True).clamp_min(1e-300) / K
    return q.argmax(1)
