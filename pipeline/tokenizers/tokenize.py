"""Tokenizers: item vectors -> a trained tokenizer -> unique semantic IDs (the logic of `tokenize@<t>` and
`semantic_ids@<t>`), for every kind a ``tokenizers.<t>`` block's ``model`` names: the RQ-VAE (TIGER §3.1)
and LETTER (the RQ-VAE with LETTER's regularisers, ``pipeline.tokenizers.letter``)."""
from __future__ import annotations

import csv

import numpy as np
import torch
from safetensors.torch import save_file

from pipeline.config import LetterTokenizer, RQVAETokenizer
from pipeline.io import atomic_dir, atomic_path, write_json
from pipeline.runtime.devices import resolve_device
from pipeline.tokenizers.item_vectors import load_embeddings
from pipeline.tokenizers.letter import LetterRegulariser, neighbour_code_agreement
from pipeline.tokenizers.rqvae import RQVAEConfig, load_rqvae, save_rqvae, train_rqvae
from pipeline.tokenizers.semantic_ids import assert_unique, assign_collision_tokens, semantic_id_stats, write_id_table


def rqvae_config(tp: RQVAETokenizer, in_dim: int) -> RQVAEConfig:
    return RQVAEConfig(in_dim=in_dim, hidden=tuple(tp.hidden), code_dim=tp.code_dim, levels=tp.levels,
                       codebook_size=tp.codebook_size, beta=tp.beta, recon_reduction=tp.recon_reduction)


def tokenize(tp: RQVAETokenizer, seed: int, out_dir, curve_path, log=print, on_epoch=None) -> dict:
    """Train the RQ-VAE on ``tp.inputs[0]``; write the checkpoint (safetensors + JSON) and the per-epoch curve."""
    z = load_embeddings(tp.inputs[0])
    config = rqvae_config(tp, z.shape[1])
    log(f"RQ-VAE on {z.shape[0]:,} items x {z.shape[1]}: L={tp.levels}, K={tp.codebook_size}, e={tp.code_dim}, "
        f"{tp.epochs} epochs, recon reduction {tp.recon_reduction}")
    regulariser = letter_regulariser(tp, z, seed, log)
    history: list[dict] = []

    def epoch_done(epoch: int, metrics: dict) -> None:
        history.append({"epoch": epoch, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)

    model, _ = train_rqvae(z, config, epochs=tp.epochs, batch_size=tp.batch_size, lr=tp.lr, optimizer=tp.optimizer,
                           weight_decay=tp.weight_decay, seed=seed, device=resolve_device(tp.device),
                           on_epoch=epoch_done, dead_code_restart=tp.dead_code_restart, regulariser=regulariser)
    with atomic_dir(out_dir) as tmp:
        save_rqvae(model, config, tmp)
    with atomic_path(curve_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for row in history for k in row)))
        writer.writeheader()
        writer.writerows(history)
    final = history[-1]
    log("final: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k != "epoch"))
    return final


def letter_regulariser(tp: RQVAETokenizer, z: np.ndarray, seed: int, log=print):
    """LETTER's regularisers for a ``model: letter`` block (None for an RQ-VAE, or a LETTER block whose
    regularisers are all off: then it trains as the RQ-VAE)."""
    if not isinstance(tp, LetterTokenizer):
        return None
    if tp.collaborative_weight == 0 and tp.diversity_weight == 0 and not tp.sinkhorn:
        log("LETTER with every regulariser off: the RQ-VAE's training")
        return None
    collaborative = load_embeddings(tp.inputs[-1])
    if len(collaborative) != len(z):
        raise ValueError(f"{tp.inputs[-1]}: {len(collaborative):,} collaborative vectors for the {len(z):,} items "
                         f"of {tp.inputs[0]}; re-run the stages upstream of it (dvc repro)")
    log(f"LETTER: collaborative weight {tp.collaborative_weight:g} ({collaborative.shape[1]}-d vectors of "
        f"{tp.inputs[-1]}), diversity weight {tp.diversity_weight:g} ({tp.diversity_clusters} clusters, every "
        f"{tp.diversity_refresh_epochs} epoch(s)), Sinkhorn last level {'on' if tp.sinkhorn else 'off'}")
    return LetterRegulariser(collaborative, tp.code_dim, collaborative_weight=tp.collaborative_weight,
                             diversity_weight=tp.diversity_weight, clusters=tp.diversity_clusters,
                             refresh_epochs=tp.diversity_refresh_epochs,
                             sinkhorn_epsilon=tp.sinkhorn_epsilon if tp.sinkhorn else 0.0,
                             sinkhorn_iters=tp.sinkhorn_iters, seed=seed)


def semantic_ids(tp: RQVAETokenizer, tokenizer_dir, out_dir, log=print) -> dict:
    """Assign codes, add the collision token, check uniqueness; write ids + codebooks + stats."""
    z = load_embeddings(tp.inputs[0])
    model = load_rqvae(tokenizer_dir)
    codes = model.encode_codes(torch.from_numpy(z)).cpu().numpy()
    K = model.config.codebook_size
    ids = assign_collision_tokens(codes, K)
    assert_unique(ids)
    stats = semantic_id_stats(codes, ids, K)
    if isinstance(tp, LetterTokenizer):  # how well the IDs follow the collaborative vectors it was trained on
        agreement = neighbour_code_agreement(codes, load_embeddings(tp.inputs[-1]), k=10)
        stats["cf_neighbours_share_l1"] = agreement["share"]
        stats["cf_neighbours_share_l1_chance"] = agreement["chance"]
    L = codes.shape[1]
    with atomic_dir(out_dir) as tmp:
        write_id_table(ids, tmp / "ids.parquet")
        write_json({"codebook_size": K, "levels": L, "depth": L + 1}, tmp / "meta.json")
        # (L, K, e) codebooks for DECOR's semantic embedding table (docs/method_reference.md §5).
        save_file({"codebooks": model.codebook_tensor().detach().cpu().contiguous()}, str(tmp / "codebooks.safetensors"))
    log(", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats
