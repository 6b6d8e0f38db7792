"""Train and evaluate one method: the shared logic behind `train@<method>` and `evaluate@<method>`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pipeline import distributed, paths
from pipeline.config import EvaluateParams, Params
from pipeline.devices import resolve_device
from pipeline.fingerprint import code_digest, fingerprint
from pipeline.io import atomic_dir, write_json, write_parquet
from pipeline.metrics import mask_seen, ranking_metrics, target_ranks
from pipeline.model_folder import (TRAINING_FILE, WEIGHTS_FILE, load_model, load_weights, save_weights, upstream_inputs,
                                   write_exports, write_folder)
from pipeline.models.base import TOKENIZER, Recommender
from pipeline.models.registry import MethodError, build, model_class
from pipeline.precision import resolve_precision
from pipeline.ranking import rank_split
from pipeline.recdata import load_split, load_splits
from pipeline.training import Trainer


def build_method(params: Params, method: str, seq_dir: Path = paths.SEQUENCES) -> tuple[Recommender, object]:
    """The untrained model of ``methods.<method>`` and the inputs it was built from (read from upstream)."""
    block = params.method(method)
    where = f"params.yaml: methods.{method}"
    cls = model_class(block.model, where)
    n_items = pq.ParquetFile(seq_dir / "items.parquet").metadata.num_rows
    data = upstream_inputs(cls, block.inputs, n_items, where)
    if TOKENIZER in cls.reads:  # the tokenizer behind the IDs, trained further with the model (ETEGRec)
        from pipeline.tokenizers import tokenizer_inputs

        name = block.tokenizer
        others = [p for p in block.inputs if Path(p).parent == paths.TOKENIZERS and Path(p).name != name]
        if others:
            raise MethodError(f"{where}.inputs: {others} is not the tokenizer of the IDs it reads "
                              f"({paths.semantic_ids_dir(name)}); name {paths.tokenizer_dir(name)}")
        try:
            data.tokenizer, data.item_vectors = tokenizer_inputs(params.tokenizer(name), paths.tokenizer_dir(name),
                                                                 n_items)
        except (FileNotFoundError, ValueError) as exc:
            raise MethodError(f"{where}: {exc}") from None
    try:
        return build(block.model, block.backbone, data, params.filter.max_history, where), data
    except ValueError as exc:  # the semantic IDs themselves cannot drive the constrained decoder
        if isinstance(exc, MethodError):
            raise
        raise MethodError(f"{block.inputs}: {exc}; re-run the semantic_ids stage of this tokenizer") from None


def train_method(params: Params, method: str, out_dir: str | Path, log=print, on_epoch=None,
                 seq_dir: Path = paths.SEQUENCES) -> tuple[dict, list[dict]]:
    """Fit ``method`` into ``out_dir``: a model folder that stands alone (``pipeline.model_folder``) plus the
    resumable ``last/`` checkpoint."""
    out_dir = Path(out_dir)
    block = params.method(method)
    seed = params.method_seed(method)
    torch.manual_seed(seed)  # the initial weights belong to the seed too
    model, data = build_method(params, method, seq_dir)
    splits = load_splits(seq_dir)
    main = distributed.is_main()  # under torchrun, rank 0 alone writes the model folder
    if main:
        write_folder(out_dir, method, model, data, block.inputs, seq_dir / "items.parquet")
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log(f"{method} ({block.model}): {n_params:,} trainable parameters, {len(splits['train']):,} training samples")
    if model.fits_itself:
        model.fit(splits["train"])
        save_weights(model, out_dir / WEIGHTS_FILE)
        write_exports(model, out_dir)
        write_json({}, out_dir / TRAINING_FILE)
        return {"trainable_parameters": 0, "epochs_run": 0}, []
    inputs = [seq_dir] + [Path(p) for p in block.inputs if Path(p) != seq_dir]
    trainer = Trainer(model, splits["train"], splits["valid"], block.train, out_dir, seed=seed, device=block.device,
                      log=log, on_epoch=on_epoch,
                      fingerprint=fingerprint(block.model_dump(), seed, params.filter.max_history, params.cpu_threads,
                                              code_digest(), *inputs))
    summary = trainer.fit()
    if not main:
        return {**summary, "trainable_parameters": n_params}, trainer.history
    load_weights(model, out_dir / WEIGHTS_FILE)  # exports come from the selected weights, not the last ones
    # the IDs the selected weights were trained with (ETEGRec re-derives them while it trains)
    write_folder(out_dir, method, model, data, block.inputs, seq_dir / "items.parquet")
    write_exports(model, out_dir)
    # The training budget travels with the model, so the report can show it beside the metrics: a method
    # trained for fewer epochs must not look comparable.
    # precision/device: what train.precision resolved to on this machine (auto differs across CPUs)
    write_json({"epoch": summary["epochs_run"], "best_epoch": summary["best_epoch"],
                "precision": summary["precision"], "device": summary["device"]}, out_dir / TRAINING_FILE)
    return {**summary, "trainable_parameters": n_params}, trainer.history


def evaluate_model(model_dir: str | Path, out_dir: str | Path, settings: EvaluateParams, log=print,
                   seq_dir: Path = paths.SEQUENCES) -> dict:
    """Rank the test split with the model folder's best weights; write per-user ranks, return the metrics.
    Reads nothing but the model folder, the test split and ``settings``."""
    model_dir = Path(model_dir)
    device = resolve_device(settings.device)
    model, info = load_model(model_dir, device, items_path=seq_dir / "items.parquet")
    test = load_split(seq_dir / "test.parquet")
    precision = resolve_precision(device, settings.precision, "evaluate.precision")
    ranked = rank_split(model, test, settings.beam_size, settings.batch_size, device, progress=True,
                        desc=f"evaluate {info['method']}", precision=precision)
    if settings.mask_seen:
        ranked = mask_seen(ranked, test.seen_items())
    metrics = ranking_metrics(ranked, test.targets)
    ranks = target_ranks(ranked, test.targets)
    training = model_dir / TRAINING_FILE
    trained = json.loads(training.read_text()) if training.exists() else {}
    # Both files go into the results folder in one atomic swap: an interrupted stage leaves neither half.
    with atomic_dir(out_dir) as tmp:
        write_parquet(pa.table({"user_id": test.users.astype(np.int32), "target": test.targets.astype(np.int32),
                                "rank": ranks.astype(np.int32)}), tmp / "ranks.parquet")
        write_json(trained, tmp / "training.json")
    result = {"method": info["method"], "model": info["model"], "users": int(len(test)),
              "list_length": int(ranked.shape[1]), "seen_items_masked": settings.mask_seen,
              "precision": precision, "device": device.type, **metrics}
    log(json.dumps(result))
    return result
