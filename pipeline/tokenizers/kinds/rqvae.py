"""The RQ-VAE tokenizer (TIGER §3.1; docs/method_reference.md §3): trained on the item text embeddings, its
codes are each item's nearest code at every level."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from pipeline.io import atomic_dir, write_curve
from pipeline.tokenizer_schemas import RQVAETokenizer
from pipeline.tokenizers.item_vectors import load_embeddings
from pipeline.tokenizers.kinds.base import DerivedCodes, TokenizerKind
from pipeline.tokenizers.rqvae import load_rqvae, save_rqvae
from pipeline.tokenizers.rqvae_training import Regulariser, train_rqvae


class RQVAEKind(TokenizerKind):
    params = RQVAETokenizer

    @classmethod
    def train(cls, block: RQVAETokenizer, seed: int, out_dir: Path, curve_path: Path,
              log: Callable[[str], None] = print, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
        """Train the RQ-VAE on ``block.inputs[0]``; write the checkpoint (safetensors + JSON) and the per-epoch
        curve; the metrics of the epoch whose weights were kept."""
        z = load_embeddings(block.inputs[0])
        log(f"RQ-VAE on {z.shape[0]:,} items x {z.shape[1]}: L={block.levels}, K={block.codebook_size}, "
            f"e={block.code_dim}, {'at most ' if block.patience else ''}{block.epochs} epochs"
            f"{f' (stop after {block.patience} without progress)' if block.patience else ''}, keep the "
            f"{'fewest collisions' if block.keep == 'collisions' else 'last epoch'}, "
            f"recon reduction {block.recon_reduction}")
        regulariser = cls.regulariser(block, z, seed, log)
        history: list[dict] = []

        def epoch_done(epoch: int, metrics: dict) -> None:
            history.append({"epoch": epoch, **metrics})
            if on_epoch:
                on_epoch(epoch, metrics)

        model, _ = train_rqvae(z, block, seed=seed, on_epoch=epoch_done, regulariser=regulariser)
        with atomic_dir(out_dir) as tmp:
            save_rqvae(model, model.config, tmp)
        write_curve(history, curve_path)
        final = {**kept_epoch(history, block.keep), "epochs_run": history[-1]["epoch"]}
        log(f"kept epoch {final['epoch']} of {final['epochs_run']}: "
            + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k not in ("epoch", "epochs_run")))
        return final

    @classmethod
    def regulariser(cls, block: RQVAETokenizer, z: np.ndarray, seed: int,
                    log: Callable[[str], None] = print) -> Regulariser | None:
        """Extra loss terms of a kind built on the RQ-VAE (LETTER's); none for the RQ-VAE itself."""
        return None

    @classmethod
    def derive_ids(cls, block: RQVAETokenizer, tokenizer_dir: Path, log: Callable[[str], None] = print) -> DerivedCodes:
        z = load_embeddings(block.inputs[0])
        model = load_rqvae(tokenizer_dir)
        codes = model.encode_codes(torch.from_numpy(z)).cpu().numpy()
        return DerivedCodes(codes, model.config.codebook_size, model.codebook_tensor().detach().cpu().contiguous(),
                            cls.code_stats(block, codes))

    @classmethod
    def code_stats(cls, block: RQVAETokenizer, codes: np.ndarray) -> dict:
        """The kind's own statistics of its codes (none for the RQ-VAE)."""
        return {}


def kept_epoch(history: list[dict], keep: str) -> dict:
    """The logged row of the epoch whose weights ``train_rqvae`` returned (its ``keep`` rule)."""
    if keep == "last":
        return history[-1]
    return min(history, key=lambda row: (row["collision_rate"], row["loss"]))  # the first of equals, as it keeps
