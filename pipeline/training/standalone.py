"""Train and evaluate one method outside DVC: the path of the scripts that run methods by name
(scripts/run_method.py, scripts/seed_study.py). The stages run the same two steps as two stages
(`train@<method>`, `evaluate@<method>`); this module is imported by none of them, so the train stage's code
(pipeline.code_deps) does not take in the evaluator's."""
from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.config import Params
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.training.method import train_method


def train_and_evaluate(params: Params, method: str, model_dir: str | Path, results_dir: str | Path, log=print,
                       on_epoch=None) -> dict:
    """Fit ``method`` into ``model_dir`` (:func:`train_method`), then rank the test split with that model folder
    into ``results_dir`` (:func:`evaluate_model`). Returns {method, summary, history, test, train_seconds}: the
    training summary, its per-epoch rows, the test metrics and the training's wall-clock seconds."""
    start = time.perf_counter()
    summary, history = train_method(params, method, model_dir, log=log, on_epoch=on_epoch)
    train_seconds = round(time.perf_counter() - start, 1)
    metrics = evaluate_model(model_dir, results_dir, params.evaluate, log=log)
    return {"method": method, "summary": summary, "history": history, "test": metrics, "train_seconds": train_seconds}


def write_result(result: dict, path: str | Path) -> None:
    """A result of :func:`train_and_evaluate` (and whatever a script adds to it) as indented JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=float) + "\n")
