"""Train and evaluate one method: the shared logic behind `train@<method>` and `evaluate@<method>`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import pyarrow as pa

from pipeline.io import atomic_dir, write_json, write_parquet
from pipeline.methods import (SEMANTIC_IDS, SEQUENCES, MethodError, build_model, check_block, code_digest,
                              fingerprint)
from pipeline.metrics import mask_seen, ranking_metrics, target_ranks
from pipeline.recdata import load_split, load_splits
from pipeline.devices import resolve_device
from pipeline.training import Trainer, load_weights, rank_split, save_weights, train_config


def method_block(params, method: str) -> dict:
    methods = params.model_extra.get("methods") or {}
    if method not in methods:
        raise MethodError(f"params.yaml: no block methods.{method}; defined: {sorted(methods)}")
    return check_block(method, methods[method])


def _train_settings(block: dict):
    try:
        return train_config(dict(block.get("train") or {}))
    except (TypeError, ValueError) as exc:
        raise MethodError(f"params.yaml: methods train settings: {exc}") from None


def train_method(params, method: str, out_dir: str | Path, log=print, on_epoch=None) -> tuple[dict, list[dict]]:
    """Fit ``method``; ``out_dir`` receives best.safetensors, config.json and the resumable last/ checkpoint."""
    out_dir = Path(out_dir)
    block = method_block(params, method)
    seed = int(block.get("seed", params.seed))
    torch.manual_seed(seed)  # the initial weights belong to the seed too
    model = build_model(method, block, params.filter.max_history)
    splits = load_splits(SEQUENCES)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json({"method": method, "block": block, "max_history": params.filter.max_history}, out_dir / "config.json")
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{method} ({block['model']}): {n_params:,} trainable parameters, {len(splits['train']):,} training samples")
    if block["model"] == "popularity":
        model.fit(splits["train"])
        save_weights(model, out_dir / "best.safetensors")
        return {"trainable_parameters": 0, "epochs_run": 0}, []
    cfg = _train_settings(block)
    inputs = [SEQUENCES] + ([SEMANTIC_IDS] if block["model"] != "sasrec" else [])
    trainer = Trainer(model, splits["train"], splits["valid"], cfg, out_dir, seed=seed,
                      device=block.get("device", "auto"), log=log, on_epoch=on_epoch,
                      fingerprint=fingerprint(block, seed, params.filter.max_history, code_digest(), *inputs))
    summary = trainer.fit()
    return {**summary, "trainable_parameters": n_params}, trainer.history


def evaluate_method(params, method: str, model_dir: str | Path, out_dir: str | Path, log=print) -> dict:
    """Rank the test split with the best checkpoint; write per-user ranks and return the metrics."""
    block = method_block(params, method)
    settings = params.model_extra.get("evaluate") or {}
    unknown = set(settings) - {"mask_seen", "batch_size"}
    if unknown:
        raise MethodError(f"params.yaml: evaluate: unknown key(s) {sorted(unknown)}; allowed: mask_seen, batch_size")
    masking = bool(settings.get("mask_seen", False))
    model = build_model(method, block, params.filter.max_history)
    load_weights(model, Path(model_dir) / "best.safetensors")
    device = resolve_device(block.get("device", "auto"))
    model.to(device)
    cfg = _train_settings(block)
    test = load_split(SEQUENCES / "test.parquet")
    ranked = rank_split(model, test, cfg.beam_size, settings.get("batch_size", cfg.eval_batch_size), device,
                        progress=True, desc=f"evaluate {method}", precision=cfg.precision)
    if masking:
        ranked = mask_seen(ranked, test.seen_items())
    metrics = ranking_metrics(ranked, test.targets)
    ranks = target_ranks(ranked, test.targets)
    # The training budget travels with the ranks, so the report can show it beside the metrics: a method
    # trained for fewer epochs must not look comparable. Models without epochs (popularity) record none.
    # Both files go into the results folder in one atomic swap: an interrupted stage leaves neither half.
    state = Path(model_dir) / "last" / "state.json"
    trained = json.loads(state.read_text()) if state.exists() else {}
    with atomic_dir(out_dir) as tmp:
        write_parquet(pa.table({"user_id": test.users.astype(np.int32), "target": test.targets.astype(np.int32),
                                    "rank": ranks.astype(np.int32)}), tmp / "ranks.parquet")
        write_json({k: trained[k] for k in ("epoch", "best_epoch") if k in trained}, tmp / "training.json")
    result = {"method": method, "model": block["model"], "users": int(len(test)), "list_length": int(ranked.shape[1]),
              "seen_items_masked": masking, **metrics}
    log(json.dumps(result))
    return result
