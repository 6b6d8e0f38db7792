"""The item vectors a tokenizer reads, and a trained tokenizer together with them (for a method that
trains its tokenizer further)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from pipeline.config import RQVAETokenizer
from pipeline.tokenizers.rqvae import load_rqvae


def load_embeddings(path: str | Path) -> np.ndarray:
    """Item vectors in item-id order: the text embeddings (``.npy``, the embed stage) or a trained model's
    one-tensor export (``.safetensors``: SASRec's ``item_embeddings``, the collaborative vectors ETEGRec's
    and LETTER's tokenizers read)."""
    path = Path(path)
    if not path.exists():
        hint = ("run the embed stage first (dvc repro embed)" if path.suffix == ".npy"
                else f"run the stage that writes it (dvc repro train@{path.parent.name})")
        raise FileNotFoundError(f"{path}: missing; {hint}")
    if path.suffix == ".safetensors":
        tensors = load_file(str(path))
        if len(tensors) != 1:
            raise ValueError(f"{path}: expected one tensor of item vectors, found {sorted(tensors)}")
        vectors = next(iter(tensors.values())).float().numpy()
    else:
        vectors = np.load(path)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(f"{path}: expected a finite (items x dim) matrix, got shape {vectors.shape}")
    return vectors.astype(np.float32, copy=False)


def tokenizer_inputs(tp: RQVAETokenizer, tokenizer_dir, n_items: int) -> tuple[torch.nn.Module, torch.Tensor]:
    """A trained tokenizer and the item vectors it was trained on, for a method that trains it further
    (ETEGRec's warm start: the paper starts from a trained RQ-VAE)."""
    if tp.model == "external":
        raise ValueError(f"{tokenizer_dir}: an external tokenizer brings IDs only, no trained model to train "
                         "further; name an RQ-VAE or LETTER tokenizer")
    z = load_embeddings(tp.inputs[0])
    if len(z) != n_items:
        raise ValueError(f"{tp.inputs[0]}: {len(z):,} item vectors for {n_items:,} items; re-run the stages "
                         "upstream of it (dvc repro)")
    model = load_rqvae(tokenizer_dir)
    if model.config.in_dim != z.shape[1]:
        raise ValueError(f"{tokenizer_dir}: a tokenizer of {model.config.in_dim}-d inputs, but {tp.inputs[0]} holds "
                         f"{z.shape[1]}-d vectors; re-run its tokenize stage")
    return model, torch.from_numpy(z)
