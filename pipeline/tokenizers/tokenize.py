"""Tokenizers: item vectors -> a trained tokenizer -> unique semantic IDs (the logic of `tokenize@<t>` and
`semantic_ids@<t>`), for every kind a ``tokenizers.<t>`` block's ``model`` names: the RQ-VAE (TIGER §3.1),
LETTER (the RQ-VAE with LETTER's regularisers, ``pipeline.tokenizers.letter``) and IDs a user brings
(``pipeline.tokenizers.external``)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import torch
from safetensors.torch import save_file

from pipeline.config import ExternalTokenizer, LetterTokenizer, RQVAETokenizer, TokenizerParams
from pipeline.io import atomic_dir, sha256_file, write_curve, write_json
from pipeline.runtime.devices import resolve_device
from pipeline.tokenizers.external import CODES_FILE, read_external_codes, write_codes
from pipeline.tokenizers.item_vectors import load_embeddings
from pipeline.tokenizers.letter import LetterRegulariser, neighbour_code_agreement
from pipeline.tokenizers.rqvae import RQVAEConfig, load_rqvae, save_rqvae, train_rqvae
from pipeline.tokenizers.semantic_ids import (
    assert_unique,
    assign_collision_tokens,
    codebook_utilisation,
    collision_stats,
    read_id_table,
    semantic_id_stats,
    write_id_table,
)


def rqvae_config(tp: RQVAETokenizer, in_dim: int) -> RQVAEConfig:
    return RQVAEConfig(in_dim=in_dim, hidden=tuple(tp.hidden), code_dim=tp.code_dim, levels=tp.levels,
                       codebook_size=tp.codebook_size, beta=tp.beta, recon_reduction=tp.recon_reduction)


def tokenize(tp: TokenizerParams, seed: int, out_dir, curve_path, log=print, on_epoch=None) -> dict:
    """Train the RQ-VAE on ``tp.inputs[0]``; write the checkpoint (safetensors + JSON) and the per-epoch curve.
    An external block instead checks the codes it brings and stores them (:func:`import_codes`)."""
    if isinstance(tp, ExternalTokenizer):
        return import_codes(tp, out_dir, curve_path, log)
    z = load_embeddings(tp.inputs[0])
    config = rqvae_config(tp, z.shape[1])
    log(f"RQ-VAE on {z.shape[0]:,} items x {z.shape[1]}: L={tp.levels}, K={tp.codebook_size}, e={tp.code_dim}, "
        f"{'at most ' if tp.patience else ''}{tp.epochs} epochs"
        f"{f' (stop after {tp.patience} without progress)' if tp.patience else ''}, keep the "
        f"{'fewest collisions' if tp.keep == 'collisions' else 'last epoch'}, recon reduction {tp.recon_reduction}")
    regulariser = letter_regulariser(tp, z, seed, log)
    history: list[dict] = []

    def epoch_done(epoch: int, metrics: dict) -> None:
        history.append({"epoch": epoch, **metrics})
        if on_epoch:
            on_epoch(epoch, metrics)

    model, _ = train_rqvae(z, config, epochs=tp.epochs, batch_size=tp.batch_size, lr=tp.lr, optimizer=tp.optimizer,
                           weight_decay=tp.weight_decay, seed=seed, device=resolve_device(tp.device),
                           on_epoch=epoch_done, dead_code_restart=tp.dead_code_restart, regulariser=regulariser,
                           patience=tp.patience, keep=tp.keep)
    with atomic_dir(out_dir) as tmp:
        save_rqvae(model, config, tmp)
    write_curve(history, curve_path)
    final = kept_epoch(history, tp.keep)
    final = {**final, "epochs_run": history[-1]["epoch"]}
    log(f"kept epoch {final['epoch']} of {final['epochs_run']}: "
        + ", ".join(f"{k} {v:.4g}" for k, v in final.items() if k not in ("epoch", "epochs_run")))
    return final


def import_codes(tp: ExternalTokenizer, out_dir, curve_path, log=print) -> dict:
    """``tokenize@<t>`` of an external block: the file's codes for the catalogue, checked, into ``out_dir``;
    the metrics (and the one-row curve) give their utilisation and collisions."""
    source, items_path = Path(tp.inputs[0]), Path(tp.inputs[-1])
    codes, K, facts = read_external_codes(source, pl.read_parquet(items_path), fmt=tp.format, key=tp.key,
                                          codebook_size=tp.codebook_size)
    stats = {"items": len(codes), "levels": codes.shape[1], "codebook_size": K, **facts,
             **{f"util_l{level + 1}": u for level, u in enumerate(codebook_utilisation(codes, K))},
             **collision_stats(codes)}
    log(f"{source}: codes of {len(codes):,} items ({facts['ignored_items']:,} of the file's items are not in the "
        f"catalogue), {codes.shape[1]} levels of {K} codes, collision rate {stats['collision_rate']:.4f}")
    with atomic_dir(out_dir) as tmp:
        write_codes(codes, tmp / CODES_FILE)
        write_json({"model": "external", "source": str(source), "sha256": sha256_file(source),
                    "format": facts["format"], "key": tp.key, "codebook_size": K, "levels": codes.shape[1]},
                   tmp / "config.json")
    write_curve([{"epoch": 0, **{k: v for k, v in stats.items() if isinstance(v, (int, float))}}], curve_path)
    return stats


def kept_epoch(history: list[dict], keep: str) -> dict:
    """The logged row of the epoch whose weights ``train_rqvae`` returned (its ``keep`` rule)."""
    if keep == "last":
        return history[-1]
    return min(history, key=lambda row: (row["collision_rate"], row["loss"]))  # the first of equals, as it keeps


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


def semantic_ids(tp: TokenizerParams, tokenizer_dir, out_dir, log=print) -> dict:
    """Assign codes, add the collision token, check uniqueness; write ids + codebooks + stats (an external
    block: its stored codes, and no codebooks)."""
    model = None
    if isinstance(tp, ExternalTokenizer):
        codes = read_id_table(Path(tokenizer_dir) / CODES_FILE)  # the same item -> columns layout, checked
        K = int(json.loads((Path(tokenizer_dir) / "config.json").read_text())["codebook_size"])
    else:
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
        if model is not None:
            save_file({"codebooks": model.codebook_tensor().detach().cpu().contiguous()},
                      str(tmp / "codebooks.safetensors"))
    log(", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats
