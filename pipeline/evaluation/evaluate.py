"""The `evaluate@<method>` stage's body: rank the test split with a model folder alone, return Recall/NDCG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from pipeline import paths
from pipeline.config import EvaluateParams
from pipeline.data.splits import load_split
from pipeline.evaluation.metrics import mask_seen, ranking_metrics, target_ranks
from pipeline.evaluation.ranking import rank_split
from pipeline.io import atomic_dir, write_json, write_parquet
from pipeline.models.folder import TRAINING_FILE, load_model
from pipeline.runtime.devices import resolve_device
from pipeline.runtime.precision import resolve_precision


def evaluate_model(model_dir: str | Path, out_dir: str | Path, settings: EvaluateParams, log=print,
                   seq_dir: Path = paths.SEQUENCES_DIR) -> dict:
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
              "precision": precision, "device": device.type, **metrics,
              # how long it trained (the training run's record), so a row cut short by its budget shows beside it
              "epochs_run": trained.get("epoch", 0), "best_epoch": trained.get("best_epoch", 0)}
    log(json.dumps(result))
    return result
