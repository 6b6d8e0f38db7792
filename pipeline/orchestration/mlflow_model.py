"""A trained method as an MLflow model: a pyfunc that wraps ``pipeline.recommend`` (history in, top-K out).

The train stage logs each trained model folder with this wrapper and registers it under the method's name, so
``mlflow.pyfunc.load_model("models:/tiger/latest")`` serves the same top-K as ``python -m pipeline.recommend``:
both rank through :func:`pipeline.recommend.rank_history` on the folder's own config, weights and semantic IDs.

Input: a DataFrame with a ``history`` column, each row the raw item ids of one user, oldest first. Output: a
DataFrame with an ``items`` column, the top-``k`` raw item ids per row (``params={"k": 10}``).
"""
from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pyarrow.parquet as pq
from mlflow.models import infer_signature

from pipeline.models.folder import load_model
from pipeline.recommend import RecommendError, rank_history
from pipeline.runtime.devices import resolve_device

MODEL_ARTIFACT, ITEMS_ARTIFACT = "model_folder", "items"


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """Loads the model folder once; ranks each row's history."""

    def load_context(self, context) -> None:
        self.device = resolve_device("auto")
        items_path = Path(context.artifacts[ITEMS_ARTIFACT])
        self.model, _ = load_model(Path(context.artifacts[MODEL_ARTIFACT]), self.device, items_path=items_path)
        self.raw_ids = pq.read_table(items_path, columns=["item_id", "raw_item_id"]).sort_by("item_id") \
            .column("raw_item_id").to_pylist()
        self.dense = {raw: i for i, raw in enumerate(self.raw_ids)}

    def predict(self, context, model_input, params: dict | None = None):
        k = int((params or {}).get("k", 10))
        out = []
        for history in model_input["history"]:
            unknown = [i for i in history if i not in self.dense]
            if unknown:
                raise RecommendError(f"item(s) {unknown[:5]} are not in the items table ({len(self.dense):,} items)")
            ranked = rank_history(self.model, [self.dense[i] for i in history], k, self.device)
            out.append([self.raw_ids[i] for i in ranked])
        return pd.DataFrame({"items": out})


def log_recommender(model_dir: Path, items_path: Path, registered_name: str) -> str:
    """Log ``model_dir`` (and the items table it ranks) as a pyfunc model of the active run and register it as
    ``registered_name``; returns the model's URI."""
    example = pd.DataFrame({"history": [["item"]]})
    signature = infer_signature(example, pd.DataFrame({"items": [["item"]]}), params={"k": 10})
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # the signature is given (an input example would need a real history); predict's inputs are checked by it
        warnings.filterwarnings("ignore", message=".*(input_example|type hints).*")
        # the folder without its resumable checkpoint (last/: optimizer state, several times the weights)
        folder = shutil.copytree(model_dir, Path(tmp) / model_dir.name, ignore=shutil.ignore_patterns("last"))
        info = mlflow.pyfunc.log_model(
            name="recommender", python_model=RecommenderModel(), signature=signature,
            artifacts={MODEL_ARTIFACT: str(folder), ITEMS_ARTIFACT: str(items_path)},
            # the project itself is the dependency: an environment with this repository installed serves it
            pip_requirements=[], registered_model_name=registered_name)
    return info.model_uri
