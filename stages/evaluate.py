"""DVC stage `evaluate@<method>`: rank every test user's items with the model folder alone; Recall/NDCG/
invalid@K; per-user ranks. Its MLflow run is nested beside the
train stage's under the method's parent run."""
import sys

from pipeline import paths
from pipeline.config import load_params
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.io import write_json
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage
from pipeline.runtime.reproducible import pin_threads


def main(method: str) -> None:
    params = load_params()
    pin_threads(params.cpu_threads)  # the output bytes depend on the thread count
    metrics_path = paths.METRICS_DIR / f"evaluate_{method}.json"
    # the train run's settings beside the test metrics, so that MLflow's compare view has both in one row
    train_run = tracking.latest_run(params.data.dataset_name, f"train@{method}")
    trained_with = dict(train_run.data.params) if train_run is not None else {}
    with tracking.stage_run(f"evaluate@{method}", params.data.dataset_name,
                            {**trained_with, "method.name": method, "evaluate": params.evaluate.model_dump()},
                            group=f"method:{method}") as run:  # the run spans the ranking
        results = as_flow(evaluate_model, name=f"evaluate@{method}")(paths.model_dir(method),
                                                                      paths.results_dir(method), params.evaluate)
        write_json(results, metrics_path)  # the method's one line of `dvc metrics show`
        if train_run is not None:
            run.set_tags({"train.run_id": train_run.info.run_id})
        run.log_metrics({**{f"test_{k}": v for k, v in results.items() if isinstance(v, float)},
                         "epochs_run": results["epochs_run"], "best_epoch": results["best_epoch"]})
        run.set_tags({"evaluate.precision_used": results["precision"], "evaluate.device_used": results["device"]})
        run.log_artifact(str(metrics_path))


if __name__ == "__main__":
    run_stage(f"evaluate@{sys.argv[1]}", lambda: main(sys.argv[1]))
