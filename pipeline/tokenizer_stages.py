"""The `tokenize` and `semantic_ids` stages' logic (methods.md §3): embeddings -> RQ-VAE -> unique IDs."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from pipeline.io import atomic_dir, atomic_path, write_json, write_parquet
from pipeline.rqvae import RQVAEConfig, load_rqvae, save_rqvae, train_rqvae
from pipeline.semantic_ids import assert_unique, assign_collision_tokens, semantic_id_stats
from pipeline.devices import resolve_device


def load_embeddings(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the embed stage first (dvc repro embed)")
    vectors = np.load(path)
    if vectors.ndim != 2 or not np.isfinite(vectors).all():
        raise ValueError(f"{path}: expected a finite (items x dim) matrix, got shape {vectors.shape}")
    return vectors.astype(np.float32, copy=False)


def rqvae_config(params, in_dim: int) -> RQVAEConfig:
    tp = params.tokenize
    return RQVAEConfig(in_dim=in_dim, hidden=tuple(tp.hidden), code_dim=tp.code_dim, levels=tp.levels,
                       codebook_size=tp.codebook_size, beta=tp.beta, recon_reduction=tp.recon_reduction)


def tokenize(params, embeddings_path, out_dir, curve_path, log=print, on_epoch=None) -> dict:
    """Train the RQ-VAE; write the checkpoint (safetensors + JSON) and the per-epoch curve (CSV)."""
    tp = params.tokenize
    z = load_embeddings(embeddings_path)
    config = rqvae_config(params, z.shape[1])
    log(f"RQ-VAE on {z.shape[0]:,} items x {z.shape[1]}: L={tp.levels}, K={tp.codebook_size}, e={tp.code_dim}, "
        f"{tp.epochs} epochs, recon reduction {tp.recon_reduction}")
    history: list[dict] = []

    def epoch_done(epoch: int, metrics: dict) -> None:
        history.append({"epoch": epoch, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)

    model, _ = train_rqvae(z, config, epochs=tp.epochs, batch_size=tp.batch_size, lr=tp.lr, optimizer=tp.optimizer,
                           weight_decay=tp.weight_decay, seed=params.seed, device=resolve_device(tp.device),
                           on_epoch=epoch_done, dead_code_restart=tp.dead_code_restart)
    with atomic_dir(out_dir) as tmp:
        save_rqvae(model, config, tmp)
    with atomic_path(curve_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
        writer.writeheader()
        writer.writerows(history)
    final = history[-1]
    log("final: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k != "epoch"))
    return final


def semantic_ids(params, embeddings_path, rqvae_dir, out_dir, log=print) -> dict:
    """Assign codes, add the collision token, check uniqueness; write ids + codebooks + stats."""
    z = load_embeddings(embeddings_path)
    model = load_rqvae(rqvae_dir)
    codes = model.encode_codes(torch.from_numpy(z)).cpu().numpy()
    K = model.config.codebook_size
    ids = assign_collision_tokens(codes, K)
    assert_unique(ids)
    stats = semantic_id_stats(codes, ids, K)
    L = codes.shape[1]
    table = pl.DataFrame({"item_id": np.arange(len(ids), dtype=np.int32),
                          **{f"c{l + 1}": ids[:, l].astype(np.int32) for l in range(L)},
                          "c_dup": ids[:, L].astype(np.int32)})
    with atomic_dir(out_dir) as tmp:
        write_parquet(table, tmp / "ids.parquet")
        write_json({"codebook_size": K, "levels": L, "depth": L + 1}, tmp / "meta.json")
        # (L, K, e) codebooks for DECOR's semantic embedding table (methods.md §5).
        save_file({"codebooks": model.codebook_tensor().detach().cpu().contiguous()}, str(tmp / "codebooks.safetensors"))
    log(", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats
