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

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.io import atomic_path, write_json
from pipeline.runtime.devices import resolve_device
from pipeline.tokenizer_schemas import RQVAETokenizer
from pipeline.tokenizers.kmeans import KMEANS_ITERS, kmeans, sinkhorn_codes, sq_dists

__all__ = [
    "RQVAEConfig",
    "RQVAE",
    "kmeans",
    "sinkhorn_codes",
    "save_rqvae",
    "load_rqvae",
    "resolve_device",
    "RQVAE_WEIGHTS_FILE",
    "RQVAE_CONFIG_FILE",
]

RQVAE_WEIGHTS_FILE = "model.safetensors"
RQVAE_CONFIG_FILE = "config.json"
RECON_REDUCTIONS = ("sum", "mean")
_DEFAULTS = RQVAETokenizer()  # the one place of the settings and their reasons: pipeline/tokenizer_schemas.py


@dataclass(frozen=True)
class RQVAEConfig:
    """The network a checkpoint holds: the architecture fields of a ``tokenizers.<name>`` block
    (:class:`~pipeline.tokenizer_schemas.RQVAETokenizer`, its defaults and their reasons), the input width of
    the vectors it was trained on, and a dropout rate no params block sets (ETEGRec's tokenizer may)."""
    in_dim: int
    hidden: tuple[int, ...] = tuple(_DEFAULTS.hidden)
    code_dim: int = _DEFAULTS.code_dim
    levels: int = _DEFAULTS.levels
    codebook_size: int = _DEFAULTS.codebook_size
    beta: float = _DEFAULTS.beta
    recon_reduction: str = _DEFAULTS.recon_reduction
    dropout: float = 0.0  # after each hidden ReLU of encoder and decoder; TIGER uses none

    @classmethod
    def from_params(cls, block: RQVAETokenizer, in_dim: int) -> "RQVAEConfig":
        """The network of a params block for ``in_dim``-wide input vectors: every field both share."""
        shared = [f.name for f in dataclasses.fields(cls) if f.name in type(block).model_fields]
        return cls(in_dim=in_dim, **{name: getattr(block, name) for name in shared})

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
    768-d inputs it kept every level-1 code in use at a small AdamW lr (1e-5) but did not help at lr 1e-3,
    and on the test's clustered data at lr 1e-2 it made level-1 cluster merges more frequent across seeds.
    See train_rqvae (pipeline.tokenizers.rqvae_training) on codebook collapse.
    """
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


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
                dists = sq_dists(residual.detach(), book.detach())
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
                c = sq_dists(residual, self.codebooks[level]).argmin(1)
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
