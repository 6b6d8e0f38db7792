"""The params schema of each tokenizer kind: one ``tokenizers.<name>`` block of params.yaml, chosen by its
``model`` key (docs/adding_a_tokenizer.md).

Pydantic only, no torch: ``pipeline.config`` builds ``TokenizerParams`` from :data:`SCHEMAS`, and every stage,
download and filter included, imports the config. The code that trains each kind and derives its IDs is in
``pipeline.tokenizers.kinds`` (the registry: ``pipeline.tokenizers.registry``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TokenizerSchema(BaseModel):
    """What every tokenizer block has: its kind (``model``) and the files its ``tokenize`` stage reads."""
    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str
    inputs: list[str]


class RQVAETokenizer(TokenizerSchema):
    """An RQ-VAE over item text embeddings (docs/method_reference.md §3); one ``tokenizers.<name>`` block."""
    model: Literal["rqvae"] = "rqvae"
    # The files it reads; DVC deps of tokenize@<name> (the first and the last entry, so at most two).
    inputs: list[str] = Field(default_factory=lambda: ["data/processed/embeddings/embeddings.npy"],
                              min_length=1, max_length=2)
    # Encoder MLP hidden sizes: TIGER 768->512->256->128->e.
    hidden: list[int] = [512, 256, 128]
    # e = 128 = the recommender width: DECOR uses the frozen codebooks as token embeddings, and TIGER
    # must share the same IDs for a fair comparison. TIGER's paper uses e = 32 (a params change).
    code_dim: int = Field(128, ge=1)
    levels: int = Field(3, ge=1, le=8)  # L = 3 (TIGER)
    codebook_size: int = Field(256, ge=2)  # K = 256 (TIGER)
    beta: float = Field(0.25, ge=0)  # commitment weight (TIGER)
    # Sum over dimensions (TIGER's ||z - z_hat||^2) or mean: decides whether codebooks collapse.
    recon_reduction: Literal["sum", "mean"] = "sum"
    # Move codes no item uses onto random residuals after each epoch (Jukebox/SoundStream). Our choice,
    # off in TIGER (false = TIGER's setting): without it level 1 collapses to a few codes on small
    # catalogues (docs/methods.md, "The tokenizers").
    dead_code_restart: bool = True
    # TIGER: 20k epochs, batch 1024, Adagrad lr 0.4; others AdamW lr 1e-3, wd 1e-4 (docs/method_reference.md §3).
    # A cap when ``patience`` > 0: training stops once for ``patience`` epochs neither the collision rate nor the
    # loss (by 0.1 %) improved (pipeline/tokenizers/rqvae_training.py, train_rqvae).
    epochs: int = Field(500, ge=1)
    patience: int = Field(50, ge=0)  # 0 = every epoch of ``epochs``
    # The checkpoint kept: the last (converged) epoch, or the epoch of the fewest collisions (ties: lower loss),
    # as the reference implementations keep theirs (chosen on validation: docs/methods.md, "The tokenizers").
    keep: Literal["collisions", "last"] = "last"
    batch_size: int = Field(1024, ge=1)
    optimizer: Literal["adamw", "adagrad"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    device: str = "auto"


class LetterTokenizer(RQVAETokenizer):
    """LETTER (Wang et al., CIKM 2024): the RQ-VAE plus a collaborative and a diversity regulariser
    (pipeline/tokenizers/letter.py). ``inputs``: [the text embeddings it quantises, the collaborative item vectors]."""
    model: Literal["letter"] = "letter"
    inputs: list[str] = Field(default_factory=lambda: ["data/processed/embeddings/embeddings.npy",
                                                       "data/models/sasrec/item_embeddings.safetensors"],
                              min_length=2, max_length=2)
    # alpha, the collaborative regulariser's weight (paper: searched in {1e-4 .. 1e-1}; official script 0.01)
    collaborative_weight: float = Field(0.01, ge=0)
    # beta, the diversity regulariser's weight (paper: searched in {1e-4 .. 1e-1}; official script 1e-4)
    diversity_weight: float = Field(1e-4, ge=0)
    diversity_clusters: int = Field(10, ge=2)  # codes of each codebook grouped in this many clusters (official: 10)
    diversity_refresh_epochs: int = Field(1, ge=1)  # re-cluster every N epochs (official: every epoch)
    # The official code assigns the last level by Sinkhorn-Knopp balancing while training (epsilon 0.003,
    # 50 iterations); false = nearest code at every level, as the RQ-VAE.
    sinkhorn: bool = True
    sinkhorn_epsilon: float = Field(0.003, gt=0)
    sinkhorn_iters: int = Field(50, ge=1)


class ExternalTokenizer(TokenizerSchema):
    """Semantic IDs a user brings, read from a file of item -> codes (pipeline/tokenizers/external.py): the
    control that runs a recommender on reference IDs. ``inputs``: [the file, the catalogue it must cover]."""
    model: Literal["external"] = "external"
    inputs: list[str] = Field(min_length=2, max_length=2)
    format: Literal["auto", "letter_index", "json", "parquet"] = "auto"  # auto: by suffix and first value
    key: Literal["raw_item_id", "item_id"] = "raw_item_id"  # the source's item ids, or the pipeline's 0..N-1
    codebook_size: int = Field(0, ge=0)  # codes lie in [0, K); 0 = one more than the largest code in the file

    @field_validator("inputs")
    @classmethod
    def _names_the_catalogue(cls, inputs: list[str]) -> list[str]:
        if Path(inputs[-1]).name != "items.parquet":
            raise ValueError(f"the second input must be the catalogue the codes cover, "
                             f"data/interim/sequences/items.parquet (got {inputs[-1]!r})")
        return inputs


# The kind name (a block's ``model:``) -> its schema; the same names as the implementations of
# pipeline.tokenizers.registry.KINDS. A block without ``model:`` is an RQ-VAE.
SCHEMAS: dict[str, type[TokenizerSchema]] = {
    "rqvae": RQVAETokenizer,
    "letter": LetterTokenizer,
    "external": ExternalTokenizer,
}
DEFAULT_KIND = "rqvae"
