"""scripts/seed_study.py's runs are tracked like the stages' runs: each (method, seed) is an MLflow run named for it,
nested under the study's parent run, with its curve and test metrics (read back with the MLflow client)."""
import importlib.util
import json
from pathlib import Path

import mlflow

from tests.conftest import TINY_T5, TINY_TRAIN

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "seed_study.py"


def test_each_method_and_seed_of_a_study_is_an_mlflow_run_under_the_studys_parent(workspace, tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("seed_study", SCRIPT)
    seed_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_study)
    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    monkeypatch.setenv("GENREC_TRACKING", "1")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8)
    raw = {"methods": {"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"], "backbone": TINY_T5,
                                 "train": {**TINY_TRAIN, "epochs": 2}}},
           "tokenizers": {"rq": {"model": "rqvae"}}}
    for seed in (1, 2):
        run_dir = tmp_path / "study" / f"tiger-s{seed}"
        run_dir.mkdir(parents=True)
        result = seed_study.run_one({**raw, "methods": {"tiger": {**raw["methods"]["tiger"], "seed": seed}}},
                                    "tiger", seed, str(run_dir), 1, study="toy")
        assert result["test"]["users"] == 40
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("amazon-scientific").experiment_id])
    by_name = {r.info.run_name: r for r in runs}
    assert {"study@tiger-s1", "study@tiger-s2", "study:toy"} <= set(by_name), sorted(by_name)
    parent = by_name["study:toy"].info.run_id
    for seed in (1, 2):
        run = by_name[f"study@tiger-s{seed}"]
        assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["study.seed"] == str(seed)
        assert "test_ndcg_at_10" in run.data.metrics and run.data.params["seed"] == str(seed)
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2


def test_a_finished_run_is_skipped_and_re_evaluated_on_request(workspace, tmp_path):
    """An interrupted study resumes: a run with its result.json is not trained again; `--re-evaluate` ranks its
    model again and marks the result."""
    spec = importlib.util.spec_from_file_location("seed_study", SCRIPT)
    seed_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_study)
    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8)
    raw = {"methods": {"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"], "backbone": TINY_T5,
                                 "train": {**TINY_TRAIN, "epochs": 1}, "seed": 3}},
           "tokenizers": {"rq": {"model": "rqvae"}}}
    run_dir = tmp_path / "study" / "tiger-s3"
    run_dir.mkdir(parents=True)
    first = seed_study.run_one(raw, "tiger", 3, str(run_dir), 1)
    assert first["seed"] == 3 and first["summary"]["epochs_run"] == 1 and "train_seconds" in first
    weights = {p.name: p.stat().st_mtime_ns for p in (run_dir / "model").iterdir() if p.is_file()}
    again = seed_study.run_one(raw, "tiger", 3, str(run_dir), 1)
    assert again == json.loads(json.dumps(first, default=float))  # read back, not trained again
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "model").iterdir() if p.is_file()} == weights
    ranked = seed_study.run_one(raw, "tiger", 3, str(run_dir), 1, re_evaluate=True)
    assert ranked["re_evaluated"] and ranked["test"] == again["test"]
