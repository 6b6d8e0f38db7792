"""LETTER's regularisers on the RQ-VAE (Wang et al., "Learnable Item Tokenization for Generative
Recommendation", CIKM 2024; its regularisers as the paper describes them, their
settings as its official training script sets them), and how well a tokenizer's IDs follow the collaborative signal.

The tokenizer is the RQ-VAE of ``pipeline.tokenizers.rqvae`` (its loss, its codebooks, its checkpoint) trained with
two more terms, weighted by alpha and beta (``tokenizers.<name>.collaborative_weight`` / ``diversity_weight``):

- **Collaborative regulariser**: in-batch contrastive loss between each item's quantised latent
  ``r_hat`` and its collaborative embedding ``h`` (SASRec's item table): cross-entropy of the logits
  ``r_hat_i . W h_j`` with the item itself as the answer, so that items with similar interaction patterns
  get nearby quantised latents and hence shared codes. ``r_hat`` passes the straight-through estimator as in
  the official code, so this term trains the encoder, not the codes. The paper's latent and collaborative
  vectors have one width (32); ours differ (code_dim vs SASRec's hidden), so ``W`` is a learned linear map of
  the collaborative vectors into the code space (our choice; the identity when the widths agree).
- **Diversity regulariser**: each level's K codes are clustered (k-means, re-run every
  ``diversity_refresh_epochs``); an item's code at a level is pulled toward another code of its own cluster
  and pushed from all other codes: cross-entropy of the logits ``e_c . e_k`` over the level's codes k (its
  own code c excluded), the answer a random other member of c's cluster. As in the official code the term
  acts on the code vectors and is averaged over levels. The official code clusters with size-constrained
  k-means; here plain k-means (``pipeline.tokenizers.rqvae.kmeans``), and a code alone in its cluster adds no term.
- **Balanced last level**: the official code assigns the last level's codes by Sinkhorn-Knopp while
  training (``pipeline.tokenizers.rqvae.sinkhorn_codes``), which spreads items over the codes and lowers collisions.
  The semantic-ID stage still assigns the nearest codes plus the collision token (the shared protocol).

With both weights at 0 and Sinkhorn off, no regulariser is built and training is the RQ-VAE's, step for
step (tested).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.tokenizers.rqvae import RQVAE, kmeans
from pipeline.tokenizers.rqvae_training import Regulariser


class LetterRegulariser(Regulariser):
    def __init__(self, collaborative: np.ndarray, code_dim: int, *, collaborative_weight: float,
                 diversity_weight: float, clusters: int, refresh_epochs: int, sinkhorn_epsilon: float,
                 sinkhorn_iters: int, seed: int):
        self.collaborative = torch.from_numpy(np.ascontiguousarray(collaborative, dtype=np.float32))
        self.weights = {}
        if collaborative_weight > 0:
            self.weights["collaborative_loss"] = collaborative_weight
        if diversity_weight > 0:
            self.weights["diversity_loss"] = diversity_weight
        self.clusters = clusters
        self.refresh_epochs = refresh_epochs
        self.sinkhorn = (sinkhorn_epsilon, sinkhorn_iters)
        # its own random streams: the RQ-VAE's weights and shuffling stay those of the seed
        self.generator = torch.Generator().manual_seed(seed + 1)
        width = self.collaborative.shape[1]
        self.projection: nn.Module = nn.Identity()
        if "collaborative_loss" in self.weights and width != code_dim:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + 1)
                self.projection = nn.Linear(width, code_dim, bias=False)
        self.code_cluster: torch.Tensor | None = None  # (L, K) cluster of every code
        self.clustered_at = 0

    def parameters(self, device) -> list[nn.Parameter]:
        self.projection.to(device)
        self.collaborative = self.collaborative.to(device)
        return list(self.projection.parameters())

    def losses(self, model: RQVAE, out: dict[str, torch.Tensor], rows: torch.Tensor,
               epoch: int) -> dict[str, torch.Tensor]:
        terms = {}
        if "collaborative_loss" in self.weights:
            r, r_hat = out["r"], out["r_hat"]
            quantised = r + (r_hat - r).detach()  # straight-through, as the decoder sees it
            logits = quantised @ self.projection(self.collaborative[rows]).T
            terms["collaborative_loss"] = F.cross_entropy(logits, torch.arange(len(rows), device=logits.device))
        if "diversity_loss" in self.weights:
            if self.code_cluster is None or epoch - self.clustered_at >= self.refresh_epochs:
                self.code_cluster = cluster_codes(model.codebooks.detach(), self.clusters, self.generator)
                self.clustered_at = epoch
            terms["diversity_loss"] = diversity_loss(model.codebooks, out["codes"], self.code_cluster, self.generator)
        return terms


def cluster_codes(codebooks: torch.Tensor, clusters: int, generator: torch.Generator) -> torch.Tensor:
    """(L, K) cluster index of every code of (L, K, e) ``codebooks``, by k-means per level."""
    labels = []
    for book in codebooks:
        centroids = kmeans(book, clusters, generator=generator).to(book)
        labels.append(torch.cdist(book, centroids).argmin(1))
    return torch.stack(labels)


def diversity_loss(codebooks: torch.Tensor, codes: torch.Tensor, code_cluster: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Mean over levels of the cross-entropy that pulls each item's code ``e_c`` toward a random other code of
    c's cluster, against every other code of the level (the module docstring). ``codes``: (B, L)."""
    L, K, _ = codebooks.shape
    total = codebooks.new_zeros(())
    for level in range(L):
        c = codes[:, level]
        own = F.one_hot(c, K).bool()
        same = (code_cluster[level][c][:, None] == code_cluster[level][None, :]) & ~own  # (B, K) candidates
        has = same.any(1)
        if not has.any():
            continue
        # a uniform draw among the candidates: the largest of i.i.d. uniforms restricted to them
        noise = torch.rand(same.shape, generator=generator).to(same.device)
        positive = noise.masked_fill(~same, -1.0).argmax(1)
        vectors = F.embedding(c, codebooks[level])  # repeatable backward, as RQVAE.quantize
        logits = (vectors @ codebooks[level].T).masked_fill(own, float("-inf"))
        total = total + F.cross_entropy(logits[has], positive[has])
    return total / L


def neighbour_code_agreement(codes: np.ndarray, vectors: np.ndarray, k: int = 10,
                             levels: int = 1, chunk: int = 2048) -> dict[str, float]:
    """How well IDs follow a collaborative signal: for each item, the share of its ``k`` nearest neighbours by
    cosine of ``vectors`` (SASRec's item embeddings) whose first ``levels`` codes equal its own, averaged over
    items; beside it, the share a random item would have (the sum of squared prefix frequencies)."""
    prefix = np.ascontiguousarray(codes[:, :levels])
    _, prefix_id, counts = np.unique(prefix, axis=0, return_inverse=True, return_counts=True)
    prefix_id = prefix_id.reshape(-1)
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    x = F.normalize(x, dim=1)
    ids = torch.from_numpy(prefix_id)
    shares = []
    for start in range(0, len(x), chunk):
        sim = x[start:start + chunk] @ x.T
        sim[torch.arange(sim.shape[0]), torch.arange(start, start + sim.shape[0])] = float("-inf")  # not itself
        neighbours = sim.topk(min(k, len(x) - 1), dim=1).indices
        shares.append((ids[neighbours] == ids[start:start + sim.shape[0], None]).float().mean(1))
    freq = counts / counts.sum()
    return {"share": float(torch.cat(shares).mean()), "chance": float((freq ** 2).sum())}
