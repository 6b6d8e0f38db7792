"""DVC stage `evaluate@<method>`: rank every test user's items; Recall/NDCG/invalid@K; per-user ranks."""
import json
import sys
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params
from pipeline.flows import evaluate_flow, run_stage
from pipeline.io import write_json


def main(method: str) -> None:
    params = load_params()
    model_dir = Path("data/models") / method
    results = evaluate_flow(params, method, model_dir, Path("data/results") / method)
    metrics_path = Path("reports/metrics") / f"evaluate_{method}.json"
    write_json(results, metrics_path)
    run_file = model_dir / "run.json"
    run_id = json.loads(run_file.read_text()).get("mlflow_run_id") if run_file.exists() else None
    with tracking.stage_run(f"evaluate@{method}", params.data.dataset_name,
                            {"evaluate": params.model_extra.get("evaluate") or {}}, run_name=method, run_id=run_id) as run:
        run.log_metrics({f"test_{k}": v for k, v in results.items() if isinstance(v, float)})
        run.log_artifact(str(metrics_path))


if __name__ == "__main__":
    run_stage(f"evaluate@{sys.argv[1]}", lambda: main(sys.argv[1]))
