"""Training the RQ-VAE (``pipeline.tokenizers.rqvae``, TIGER §3.1) from one ``tokenizers.<name>`` block: the epoch
loop, the stopping rule on a plateau, the kept checkpoint (docs/methods.md, "The tokenizers") and the optional
restarts of dead codes.

Determinism: for a fixed seed, training on CPU gives bit-identical weights and codes; all randomness (weights,
k-means seeding, shuffling, restarts) comes from torch RNGs seeded from ``seed``, drawn in a fixed order.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from pipeline.runtime.devices import resolve_device
from pipeline.tokenizer_schemas import RQVAETokenizer
from pipeline.tokenizers.kmeans import sq_dists
from pipeline.tokenizers.rqvae import RQVAE, RQVAEConfig
from pipeline.tokenizers.semantic_ids import codebook_utilisation, collision_stats

__all__ = ["Regulariser", "restart_dead_codes", "train_rqvae"]

OPTIMIZERS = ("adamw", "adagrad")
KEEP_RULES = ("last", "collisions")


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


def train_rqvae(embeddings: np.ndarray, block: RQVAETokenizer, *, seed: int = 0,
                on_epoch: Callable[[int, dict], None] | None = None, progress: bool = True,
                regulariser: Regulariser | None = None, min_improvement: float = 1e-3) -> tuple[RQVAE, list[dict]]:
    """Train the RQ-VAE of ``block`` (its architecture, :meth:`RQVAEConfig.from_params`, and its schedule: epochs,
    batch size, optimiser, patience, keep, dead-code restarts, device) on (N, dim) float32 embeddings; return
    (model in eval mode, history).

    ``history[i]`` = {"epoch": i + 1, **metrics}; ``on_epoch(epoch, metrics)`` gets the same metrics
    (without "epoch"), epochs counted from 1. Metrics: ``loss``, ``recon_loss``, ``rq_loss`` (means
    over the epoch's items, i.e. batch means weighted by batch size), and, from codes of the full
    dataset computed at epoch end in eval mode, ``util_l1..util_l{L}`` (share of the K codes used)
    and ``collision_rate`` (``pipeline.tokenizers.semantic_ids.collision_stats``). The global torch RNG state is
    restored on exit.

    Codebook collapse (watch ``util_l*``): Adam-type steps are ~lr per weight whatever the loss
    scale, and on wide layers with dense inputs they move the encodings coherently, so items drift
    across code boundaries faster than the codes follow; codes that lose all their items never come
    back (no dead-code restart, as in TIGER). On synthetic unit-norm 768-d "topic" embeddings with the
    default architecture, level 1 collapsed onto a single code within an epoch at AdamW lr 1e-3, and
    smaller rates only slowed the collapse; Adagrad lr 0.4 (TIGER's setting) diverged.

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
    z = _checked_embeddings(embeddings)
    config = RQVAEConfig.from_params(block, z.shape[1])
    dev = resolve_device(block.device)
    fork_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with _deterministic(), torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)  # weight init (and dropout masks)
        gen = torch.Generator().manual_seed(seed)  # k-means seeding and shuffling, on CPU
        model = RQVAE(config).to(dev)
        data = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32)).to(dev)
        extra = list(regulariser.parameters(dev)) if regulariser is not None else []
        opt = _make_optimizer(model, block.optimizer, block.lr, block.weight_decay, extra)
        history: list[dict] = []
        plateau = _Plateau(block.patience, min_improvement)
        kept: tuple[tuple[float, float], dict[str, torch.Tensor]] | None = None  # ((collisions, loss), weights)
        bar = _progress(range(1, block.epochs + 1), progress)
        for epoch in bar:
            metrics = _train_epoch(model, opt, data, gen, block, regulariser, epoch)
            score = (metrics["collision_rate"], metrics["loss"])
            if block.keep == "collisions" and (kept is None or score < kept[0]):
                kept = (score, {k: v.detach().clone() for k, v in model.state_dict().items()})
            stop = plateau.stop(*score)
            # never after the last epoch: the result is what was logged
            if block.dead_code_restart and epoch < block.epochs and not stop:
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


@torch.no_grad()
def restart_dead_codes(model: RQVAE, data: torch.Tensor, generator: torch.Generator, batch_size: int = 8192) -> int:
    """Move every code that no item uses onto the residual of a random item, level by level.

    Our addition, off in TIGER: "random restarts" of Jukebox (Dhariwal et al. 2020) / SoundStream's
    codebook expiry. On small or homogeneous catalogues the encodings contract faster than the codes
    follow and level 1 collapses to a handful of codes (MovieLens-100K with MiniLM texts: docs/methods.md,
    "The tokenizers"); a dead code then never comes back. Returns how many codes moved.
    """
    was_training = model.training
    model.eval()
    residual = torch.cat([model.encoder(data[i : i + batch_size]) for i in range(0, len(data), batch_size)])
    moved = 0
    for level in range(model.config.levels):
        book = model.codebooks[level]
        assign = torch.cat([sq_dists(residual[i : i + batch_size], book).argmin(1)
                            for i in range(0, len(residual), batch_size)])
        dead = torch.nonzero(torch.bincount(assign, minlength=model.config.codebook_size) == 0).squeeze(1)
        if len(dead):
            donors = torch.randint(len(residual), (len(dead),), generator=generator).to(residual.device)
            book[dead] = residual[donors]
            moved += len(dead)
            assign = torch.cat([sq_dists(residual[i : i + batch_size], book).argmin(1)
                                for i in range(0, len(residual), batch_size)])
        residual = residual - book[assign]
    model.train(was_training)
    return moved


def _train_epoch(model: RQVAE, opt: torch.optim.Optimizer, data: torch.Tensor, gen: torch.Generator,
                 block: RQVAETokenizer, regulariser: Regulariser | None, epoch: int) -> dict:
    """One pass over ``data`` in a shuffled order; the epoch's mean losses and the code metrics at its end.
    The codebooks are initialised by k-means on the first batch the model sees (TIGER §3.1)."""
    model.train()
    n, dev = len(data), data.device
    balance = regulariser.sinkhorn if regulariser is not None else (0.0, 50)
    perm = torch.randperm(n, generator=gen).to(dev)
    # Sums stay on the device (one sync per epoch, not per step on CUDA).
    sums = {key: torch.zeros((), device=dev) for key in ("loss", "recon_loss", "rq_loss")}
    needs_init = epoch == 1 and not bool(model.initialized)  # checked once: on CUDA every check is a sync
    for start in range(0, n, block.batch_size):
        rows = perm[start:start + block.batch_size]
        batch = data[rows]
        if needs_init:
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
            f"(tokenizers.<name>.lr={block.lr}) or check the embeddings' scale")
    codes = model.encode_codes(data).numpy()
    metrics.update(_epoch_code_metrics(codes, model.config.codebook_size))
    return metrics


def _checked_embeddings(embeddings: np.ndarray) -> np.ndarray:
    z = np.asarray(embeddings)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
        raise ValueError(f"embeddings: expected a non-empty (N, dim) matrix, got shape {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("embeddings: contain NaN or infinite values")
    return z


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


def _progress(it, enabled: bool):
    if not enabled:
        return it
    from tqdm.auto import tqdm

    return tqdm(it, desc="rqvae", unit="epoch")
