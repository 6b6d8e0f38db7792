"""RQ-VAE semantic indexer (TIGER: Rajput et al., "Recommender Systems with Generative Retrieval", 2023, §3.1).

    r = Enc(z)                                   MLP, ReLU between layers: in_dim -> *hidden -> e
    v_1 = r;  c_l = argmin_k ||v_l - e^l_k||^2;  v_{l+1} = v_l - e^l_{c_l}      (l = 1..L)
    r_hat = sum_l e^l_{c_l};   z_hat = Dec(r_hat)   mirror MLP: e -> *reversed(hidden) -> in_dim
    L_recon = ||z - z_hat||^2
    L_rq    = sum_l ||sg[v_l] - e^l_{c_l}||^2 + beta ||v_l - sg[e^l_{c_l}]||^2
    L       = L_recon + L_rq,  with the straight-through estimator r_hat_st = r + sg[r_hat - r]

Reductions (a choice the paper leaves open, fixed here and documented):
  * ``L_recon`` follows ``recon_reduction``: "sum" = squared error summed over the in_dim dimensions,
    then averaged over the batch (the paper's ||z - z_hat||^2 per item); "mean" = averaged over every
    element, i.e. exactly "sum" / in_dim. The two differ by a factor in_dim (768 for sentence-T5)
    *relative to L_rq*, and that ratio decides whether the codebooks collapse: with "mean" the
    quantisation loss dominates and the encoder is pulled onto a few codes. Hence a parameter.
  * ``L_rq`` is always per-item squared norms (summed over the e code dimensions) averaged over the
    batch, i.e. the paper's ||.||^2 per item, independent of ``recon_reduction``.
  * The residual v_{l+1} = v_l - e^l_{c_l} is not detached: the commitment term of level l > 1 also
    reaches the codebooks of earlier levels, as the equations are written.

Codebooks are initialised with k-means on the first training batch (TIGER §3.1, following
SoundStream), level by level on the residuals, to avoid dead codes from the start. Hyperparameter
defaults are TIGER's: L = 3 levels, K = 256 codes per level, beta = 0.25, encoder 512-256-128.
The code dimension defaults to 128 (the recommender's width, see params.yaml; TIGER uses 32).

Collision rate: the share of items whose full (c_1..c_L) tuple is shared with at least one other
item; the definition lives in ``pipeline.tokenizers.semantic_ids.collision_stats`` and is reused here.

Determinism: for a fixed seed, training on CPU gives bit-identical weights and codes; all randomness
(weights, k-means seeding, shuffling) comes from torch RNGs seeded from ``seed``; no numpy RNG is used.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.io import atomic_path, write_json
from pipeline.runtime.devices import resolve_device
from pipeline.tokenizers.semantic_ids import codebook_utilisation, collision_stats

__all__ = [
    "RQVAEConfig",
    "RQVAE",
    "kmeans",
    "train_rqvae",
    "save_rqvae",
    "load_rqvae",
    "resolve_device",
    "RQVAE_WEIGHTS_FILE",
    "RQVAE_CONFIG_FILE",
]

RQVAE_WEIGHTS_FILE = "model.safetensors"
RQVAE_CONFIG_FILE = "config.json"
RECON_REDUCTIONS = ("sum", "mean")
OPTIMIZERS = ("adamw", "adagrad")
KMEANS_ITERS = 30  # Lloyd iterations for the initialisation; converges well before on 1024 points


@dataclass(frozen=True)
class RQVAEConfig:
    in_dim: int
    hidden: tuple[int, ...] = (512, 256, 128)  # TIGER: 768 -> 512 -> 256 -> 128 -> e
    code_dim: int = 128  # e; TIGER uses 32, here the recommender width (params.yaml)
    levels: int = 3  # L = 3 (TIGER)
    codebook_size: int = 256  # K = 256 (TIGER)
    beta: float = 0.25  # commitment weight (TIGER, after VQ-VAE)
    recon_reduction: str = "sum"  # "sum" = TIGER's ||z - z_hat||^2; "mean" = that / in_dim
    dropout: float = 0.0  # after each hidden ReLU of encoder and decoder; TIGER uses none

    def __post_init__(self) -> None:
        # Accept lists (from JSON / YAML) but store a tuple so the config stays hashable and frozen.
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if self.in_dim < 1 or self.code_dim < 1 or any(h < 1 for h in self.hidden):
            raise ValueError(f"RQVAEConfig: layer sizes must be positive (in_dim={self.in_dim}, "
                             f"hidden={self.hidden}, code_dim={self.code_dim})")
        if self.levels < 1 or self.codebook_size < 1:
            raise ValueError(f"RQVAEConfig: levels and codebook_size must be >= 1 "
                             f"(got {self.levels}, {self.codebook_size})")
        if self.recon_reduction not in RECON_REDUCTIONS:
            raise ValueError(f"RQVAEConfig: recon_reduction must be one of {RECON_REDUCTIONS}, "
                             f"got {self.recon_reduction!r}")
        if self.beta < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"RQVAEConfig: need beta >= 0 and 0 <= dropout < 1 (got {self.beta}, {self.dropout})")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RQVAEConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"RQVAEConfig: unknown keys {sorted(unknown)} (known: {sorted(known)})")
        return cls(**d)


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and optional dropout) between them; the output layer is linear.

    PyTorch's default initialisation. He initialisation was tried, with mixed results: on unit-norm
    768-d inputs it kept util_l1 = 1.0 for 10 epochs at AdamW lr 1e-5 (default init: 0.07) but did
    not help at lr 1e-3; on the test's clustered data at lr 1e-2 it made level-1 cluster merges more
    frequent (11/16 seeds vs about 4/24). See train_rqvae on codebook collapse.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _sq_dists(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
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

    # Greedy k-means++ (Arthur & Vassilvitskii, 2007; the variant scikit-learn uses): sample
    # 2 + log(k) candidates with probability ~ D(x)^2 and keep the one that lowers the potential most.
    # Plain k-means++ sometimes seeds two centroids in one well-separated cluster, which Lloyd
    # iterations cannot undo; the greedy choice makes that much rarer.
    n_trials = 2 + int(math.log(k))
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = torch.randint(n, (1,), generator=generator)
    min_d = _sq_dists(x, x[chosen[:1]]).squeeze(1)
    for j in range(1, k):
        total = min_d.sum()
        if total > 0:
            candidates = torch.multinomial(min_d / total, n_trials, replacement=True, generator=generator)
        else:  # every point already coincides with a centroid
            candidates = torch.randint(n, (n_trials,), generator=generator)
        trial_d = torch.minimum(min_d.unsqueeze(1), _sq_dists(x, x[candidates]))  # (n, n_trials)
        best = int(trial_d.sum(0).argmin())
        chosen[j] = candidates[best]
        min_d = trial_d[:, best].contiguous()
    centroids = x[chosen].clone()

    assign = _sq_dists(x, centroids).argmin(1)
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
            dist_to_own = _sq_dists(x, centroids).gather(1, assign.unsqueeze(1)).squeeze(1)
            far = dist_to_own.topk(len(empty))
            far_idx = far.indices[far.values > 0]
            centroids[empty[:len(far_idx)]] = x[far_idx]
        new_assign = _sq_dists(x, centroids).argmin(1)
        if torch.equal(new_assign, assign) and not len(empty):
            break
        assign = new_assign
    return centroids.to(torch.float32)


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


class RQVAE(nn.Module):
    """Encoder, L residual codebooks of K codes of dimension e, decoder (see the module docstring)."""

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.config = config
        sizes = [config.in_dim, *config.hidden, config.code_dim]
        self.encoder = _mlp(sizes, config.dropout)
        self.decoder = _mlp(sizes[::-1], config.dropout)
        # One (L, K, e) parameter (not a ParameterList) so that it is saved as a single tensor.
        # The random values only matter for an untrained model; training replaces them by k-means.
        self.codebooks = nn.Parameter(torch.randn(config.levels, config.codebook_size, config.code_dim))
        # Saved with the weights so that a loaded model is never re-initialised by k-means.
        self.register_buffer("initialized", torch.tensor(False))

    def codebook_tensor(self) -> torch.Tensor:
        """The (L, K, e) codebooks."""
        return self.codebooks

    @property
    def device(self) -> torch.device:
        return self.codebooks.device

    def quantize(self, r: torch.Tensor, sinkhorn_epsilon: float = 0.0,
                 sinkhorn_iters: int = 50) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Residual quantisation of ``r`` (B, e) -> (codes (B, L) long, r_hat (B, e), L_rq scalar).

        ``sinkhorn_epsilon`` > 0: the last level's codes come from a balanced assignment of the batch
        (:func:`sinkhorn_codes`; LETTER's training), not from the nearest code."""
        residual = r
        r_hat = torch.zeros_like(r)
        rq_loss = r.new_zeros(())
        codes = []
        for level in range(self.config.levels):
            book = self.codebooks[level]
            with torch.no_grad():
                dists = _sq_dists(residual.detach(), book.detach())
                if sinkhorn_epsilon > 0 and level == self.config.levels - 1:
                    c = sinkhorn_codes(dists, sinkhorn_epsilon, sinkhorn_iters)
                else:
                    c = dists.argmin(1)
            # F.embedding, not book[c]: the CPU backward of an index accumulates with atomic adds, whose
            # order varies run to run on more than one thread (docs/performance.md, "Reproducibility").
            q = F.embedding(c, book)
            # Codebook term moves the codes towards the residuals; commitment term (weight beta)
            # moves the encoder (and earlier codes) towards the codes. Per-item squared norm, batch mean.
            rq_loss = rq_loss + ((residual.detach() - q) ** 2).sum(-1).mean() \
                + self.config.beta * ((residual - q.detach()) ** 2).sum(-1).mean()
            r_hat = r_hat + q
            residual = residual - q
            codes.append(c)
        return torch.stack(codes, 1), r_hat, rq_loss

    def forward(self, z: torch.Tensor, sinkhorn_epsilon: float = 0.0,
                sinkhorn_iters: int = 50) -> dict[str, torch.Tensor]:
        r = self.encoder(z)
        codes, r_hat, rq_loss = self.quantize(r, sinkhorn_epsilon, sinkhorn_iters)
        # Straight-through: the decoder sees r_hat, but the reconstruction gradient flows to r.
        r_hat_st = r + (r_hat - r).detach()
        z_hat = self.decoder(r_hat_st)
        sq_err = (z - z_hat) ** 2
        recon_loss = sq_err.sum(-1).mean() if self.config.recon_reduction == "sum" else sq_err.mean()
        return {"z_hat": z_hat, "codes": codes, "loss": recon_loss + rq_loss,
                "recon_loss": recon_loss, "rq_loss": rq_loss, "r": r, "r_hat": r_hat}

    @torch.no_grad()
    def init_codebooks(self, z: torch.Tensor, *, generator: torch.Generator, iters: int = KMEANS_ITERS) -> None:
        """k-means initialisation on one batch: level 1 on r = Enc(z), level l+1 on the residuals after level l."""
        was_training = self.training
        self.eval()  # dropout off: initialise on the clean encodings
        try:
            residual = self.encoder(z.to(self.device, torch.float32))
            for level in range(self.config.levels):
                centroids = kmeans(residual, self.config.codebook_size, generator=generator, iters=iters)
                self.codebooks[level].copy_(centroids.to(self.device))
                c = _sq_dists(residual, self.codebooks[level]).argmin(1)
                residual = residual - self.codebooks[level][c]
            self.initialized.fill_(True)
        finally:
            self.train(was_training)

    @torch.no_grad()
    def encode_codes(self, z: torch.Tensor | np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        """(N, in_dim) embeddings -> (N, L) codes, a CPU LongTensor; eval mode, batched, no grad."""
        if isinstance(z, np.ndarray):
            z = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
        was_training = self.training
        self.eval()
        try:
            out = [self.quantize(self.encoder(z[i:i + batch_size].to(self.device, torch.float32)))[0].cpu()
                   for i in range(0, z.shape[0], batch_size)]
        finally:
            self.train(was_training)
        if not out:
            return torch.zeros((0, self.config.levels), dtype=torch.long)
        return torch.cat(out)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    """Turn on torch's deterministic algorithms (warn-only) for the block; restore the setting after."""
    prev, prev_warn = (torch.are_deterministic_algorithms_enabled(),
                       torch.is_deterministic_algorithms_warn_only_enabled())
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev, warn_only=prev_warn)


def _make_optimizer(model: RQVAE, name: str, lr: float, weight_decay: float,
                    extra: list[nn.Parameter] = ()) -> torch.optim.Optimizer:
    # No weight decay on the codebooks: decay would pull the codes towards the origin, away from
    # the residuals they quantise. TIGER: Adagrad lr 0.4; otherwise AdamW lr 1e-3, wd 1e-4 (params.yaml).
    # ``extra``: a regulariser's own parameters (LETTER's projection), decayed like the encoder.
    others = [p for n, p in model.named_parameters() if n != "codebooks"]
    groups = [{"params": others, "weight_decay": weight_decay},
              {"params": [model.codebooks], "weight_decay": 0.0}]
    if extra:
        groups.append({"params": list(extra), "weight_decay": weight_decay})
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr)
    raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _epoch_code_metrics(codes: np.ndarray, codebook_size: int) -> dict:
    metrics = {f"util_l{level + 1}": u for level, u in enumerate(codebook_utilisation(codes, codebook_size))}
    metrics["collision_rate"] = collision_stats(codes)["collision_rate"]
    return metrics


@torch.no_grad()
def restart_dead_codes(model: RQVAE, data: torch.Tensor, generator: torch.Generator, batch_size: int = 8192) -> int:
    """Move every code that no item uses onto the residual of a random item, level by level.

    Our addition, off in TIGER: "random restarts" of Jukebox (Dhariwal et al. 2020) / SoundStream's
    codebook expiry. On small or homogeneous catalogues the encodings contract faster than the codes
    follow and level 1 collapses to a handful of codes (measured on MovieLens-100K with MiniLM texts:
    util_l1 0.4% after 20 epochs); a dead code then never comes back. Returns how many codes moved.
    """
    was_training = model.training
    model.eval()
    residual = torch.cat([model.encoder(data[i : i + batch_size]) for i in range(0, len(data), batch_size)])
    moved = 0
    for level in range(model.config.levels):
        book = model.codebooks[level]
        assign = torch.cat([_sq_dists(residual[i : i + batch_size], book).argmin(1)
                            for i in range(0, len(residual), batch_size)])
        dead = torch.nonzero(torch.bincount(assign, minlength=model.config.codebook_size) == 0).squeeze(1)
        if len(dead):
            donors = torch.randint(len(residual), (len(dead),), generator=generator).to(residual.device)
            book[dead] = residual[donors]
            moved += len(dead)
            assign = torch.cat([_sq_dists(residual[i : i + batch_size], book).argmin(1)
                                for i in range(0, len(residual), batch_size)])
        residual = residual - book[assign]
    model.train(was_training)
    return moved


def train_rqvae(embeddings: np.ndarray, config: RQVAEConfig, *, epochs: int, batch_size: int = 1024,
                lr: float = 1e-3, optimizer: str = "adamw", weight_decay: float = 1e-4, seed: int = 0,
                device: str | torch.device = "cpu", dead_code_restart: bool = False,
                on_epoch: Callable[[int, dict], None] | None = None,
                progress: bool = True, regulariser: "Regulariser | None" = None, patience: int = 0,
                keep: str = "last", min_improvement: float = 1e-3) -> tuple[RQVAE, list[dict]]:
    """Train an RQ-VAE on (N, in_dim) float32 embeddings; return (model in eval mode, history).

    ``history[i]`` = {"epoch": i + 1, **metrics}; ``on_epoch(epoch, metrics)`` gets the same metrics
    (without "epoch"), epochs counted from 1. Metrics: ``loss``, ``recon_loss``, ``rq_loss`` (means
    over the epoch's items, i.e. batch means weighted by batch size), and, from codes of the full
    dataset computed at epoch end in eval mode, ``util_l1..util_l{L}`` (share of the K codes used)
    and ``collision_rate`` (see the module docstring). The global torch RNG state is restored on exit.

    Codebook collapse (watch ``util_l*``): Adam-type steps are ~lr per weight whatever the loss
    scale, and on wide layers with dense inputs they move the encodings coherently, so items drift
    across code boundaries faster than the codes follow; codes that lose all their items never come
    back (no dead-code restart, as in TIGER). Measured on synthetic unit-norm 768-d "topic"
    embeddings (8000 items, 200 topics) with the default architecture and K = 256, after 10 epochs:
    util_l1 = 1/256 at AdamW lr 1e-3 (already after epoch 1), 0.008 at 1e-4, 0.07 at 1e-5; Adagrad
    lr 0.4 (TIGER's setting) diverged.

    ``regulariser``: extra loss terms on each batch (LETTER's, ``pipeline.tokenizers.letter``); without one the
    training is the plain RQ-VAE's, step for step. Its terms are logged as epoch means beside the others,
    and ``loss`` is then the whole objective.

    Training to convergence (the reference implementations train 3k-20k epochs and keep the checkpoint of the
    fewest collisions): ``epochs`` is then a cap, and with ``patience`` > 0 training stops once for ``patience``
    epochs neither the collision rate fell nor the loss fell by more than ``min_improvement`` (relative) below
    its best. ``keep``: "last" returns the final weights; "collisions" the weights of the epoch with the lowest
    collision rate (ties: the lower loss), as they were when that epoch's codes were measured (before any
    dead-code restart). The returned model's codes are then that epoch's logged ones.
    """
    if keep not in KEEP_RULES:
        raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
    if patience < 0:
        raise ValueError(f"patience must be >= 0, got {patience}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"need epochs >= 1 and batch_size >= 1 (got {epochs}, {batch_size})")
    z = np.asarray(embeddings)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] != config.in_dim:
        raise ValueError(f"embeddings: expected a non-empty (N, {config.in_dim}) matrix, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("embeddings: contain NaN or infinite values")
    dev = resolve_device(device)
    n = z.shape[0]
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []

    with _deterministic(), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # weight init (and dropout masks)
        gen = torch.Generator().manual_seed(seed)  # k-means seeding and shuffling, on CPU
        model = RQVAE(config).to(dev)
        data = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(dev)
        extra = list(regulariser.parameters(dev)) if regulariser is not None else []
        opt = _make_optimizer(model, optimizer, lr, weight_decay, extra)
        balance = regulariser.sinkhorn if regulariser is not None else (0.0, 50)
        history: list[dict] = []
        plateau = _Plateau(patience, min_improvement)
        kept: tuple[tuple[float, float], dict[str, torch.Tensor]] | None = None  # ((collisions, loss), weights)
        needs_init = not bool(model.initialized)  # checked once: on CUDA every check is a sync
        bar = _progress(range(1, epochs + 1), progress)
        for epoch in bar:
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            # Sums stay on the device (one sync per epoch, not per step on CUDA).
            sums = {key: torch.zeros((), device=dev) for key in ("loss", "recon_loss", "rq_loss")}
            for start in range(0, n, batch_size):
                rows = perm[start:start + batch_size]
                batch = data[rows]
                if needs_init:  # k-means on the first batch of the first epoch (TIGER)
                    model.init_codebooks(batch, generator=gen)
                    needs_init = False
                out = model(batch, *balance)
                if regulariser is not None:
                    terms = regulariser.losses(model, out, rows, epoch)
                    out["loss"] = out["loss"] + sum(regulariser.weights[key] * term for key, term in terms.items())
                    out.update(terms)
                    for key in terms:
                        sums.setdefault(key, torch.zeros((), device=dev))
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                for key in sums:
                    sums[key] += out[key].detach() * len(batch)
            metrics = {key: value.item() / n for key, value in sums.items()}
            if not math.isfinite(metrics["loss"]):
                raise FloatingPointError(
                    f"RQ-VAE loss became {metrics['loss']} in epoch {epoch}; lower the learning rate "
                    f"(tokenizers.<name>.lr={lr}) or check the embeddings' scale")
            codes = model.encode_codes(data).numpy()
            metrics.update(_epoch_code_metrics(codes, config.codebook_size))
            score = (metrics["collision_rate"], metrics["loss"])
            if keep == "collisions" and (kept is None or score < kept[0]):
                kept = (score, {k: v.detach().clone() for k, v in model.state_dict().items()})
            stop = plateau.stop(*score)
            # never after the last epoch: the result is what was logged
            if dead_code_restart and epoch < epochs and not stop:
                metrics["codes_restarted"] = float(restart_dead_codes(model, data, gen))
            history.append({"epoch": epoch, **metrics})
            if on_epoch is not None:
                on_epoch(epoch, dict(metrics))
            if progress:
                bar.set_postfix(loss=f"{metrics['loss']:.4g}", util_l1=f"{metrics['util_l1']:.2f}",
                                coll=f"{metrics['collision_rate']:.3f}")
            if stop:
                break
        if kept is not None:
            model.load_state_dict(kept[1])
    return model.eval(), history


KEEP_RULES = ("last", "collisions")


class _Plateau:
    """The stopping rule of :func:`train_rqvae`: True once ``patience`` epochs passed without a lower collision
    rate or a loss lower than its best by more than ``min_improvement`` (relative); never with patience 0."""

    def __init__(self, patience: int, min_improvement: float):
        self.patience, self.min_improvement = patience, min_improvement
        self.best_collisions, self.best_loss, self.waited = math.inf, math.inf, 0

    def stop(self, collisions: float, loss: float) -> bool:
        improved = (collisions < self.best_collisions
                    or loss < self.best_loss - self.min_improvement * abs(self.best_loss))
        self.best_collisions, self.best_loss = min(self.best_collisions, collisions), min(self.best_loss, loss)
        self.waited = 0 if improved else self.waited + 1
        return self.patience > 0 and self.waited >= self.patience


class Regulariser:
    """Extra loss terms of a tokenizer built on the RQ-VAE (LETTER's: ``pipeline.tokenizers.letter``)."""

    sinkhorn: tuple[float, int] = (0.0, 50)  # (epsilon, iterations) of the last level's balanced assignment; 0 = off
    weights: dict[str, float] = {}  # the weight of each term ``losses`` returns

    def parameters(self, device) -> list[nn.Parameter]:
        """Its own trainable parameters, moved to ``device``; trained with the RQ-VAE's optimiser."""
        return []

    def losses(self, model: RQVAE, out: dict[str, torch.Tensor], rows: torch.Tensor,
               epoch: int) -> dict[str, torch.Tensor]:
        """Unweighted loss terms (name -> scalar; ``weights`` weighs them) for the batch of items ``rows`` (indices into
        the training vectors) that produced ``out`` (``RQVAE.forward``'s dict) in ``epoch`` (from 1)."""
        raise NotImplementedError


def _progress(it, enabled: bool):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="rqvae", unit="epoch")


def save_rqvae(model: RQVAE, config: RQVAEConfig, directory: str | Path) -> None:
    """Write ``directory/model.safetensors`` (weights, codebooks) and ``directory/config.json`` atomically."""
    if config != model.config:
        raise ValueError(f"save_rqvae: config {config} differs from the model's {model.config}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    with atomic_path(directory / RQVAE_WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": "rqvae"})
    write_json(config.to_dict(), directory / RQVAE_CONFIG_FILE)


def load_rqvae(directory: str | Path, device: str | torch.device = "cpu") -> RQVAE:
    """Load a model written by :func:`save_rqvae`; returned in eval mode on ``device``."""
    directory = Path(directory)
    for name in (RQVAE_WEIGHTS_FILE, RQVAE_CONFIG_FILE):
        if not (directory / name).exists():
            raise FileNotFoundError(f"{directory / name}: missing; run its tokenize@<tokenizer> stage first")
    config = RQVAEConfig.from_dict(json.loads((directory / RQVAE_CONFIG_FILE).read_text()))
    with torch.random.fork_rng(devices=[]):  # the random initial weights are overwritten: the caller's stream stays
        model = RQVAE(config)
    model.load_state_dict(load_file(str(directory / RQVAE_WEIGHTS_FILE)), strict=True)
    return model.to(resolve_device(device)).eval()
