"""DVC stage `train@<method>`: fit one method on the training split, select on validation NDCG@10."""
import csv
import sys
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params
from pipeline.flows import run_stage, train_flow
from pipeline.io import atomic_path, write_json


def main(method: str) -> None:
    params = load_params()
    out_dir = Path("data/models") / method
    curve = Path("reports/plots") / f"train_{method}.csv"
    block = (params.model_extra.get("methods") or {}).get(method)
    section = {"method": block, "data": params.data.model_dump(), "filter": params.filter.model_dump(),
               "embed": params.embed.model_dump(), "tokenize": params.tokenize.model_dump(), "seed": params.seed}
    with tracking.stage_run(f"train@{method}", params.data.dataset_name, section, run_name=method) as run:
        summary, history = train_flow(params, method, out_dir,
                                      on_epoch=lambda epoch, row: run.log_metrics(
                                          {k: v for k, v in row.items() if k != "epoch"}, step=epoch))
        if history:
            with atomic_path(curve) as tmp, open(tmp, "w", newline="") as f:
                fieldnames = list(dict.fromkeys(k for row in history for k in row))
                writer = csv.DictWriter(f, fieldnames=fieldnames)
                writer.writeheader()
                writer.writerows(history)
            run.log_artifact(str(curve))
        else:
            curve.parent.mkdir(parents=True, exist_ok=True)
            curve.write_text("epoch\n")
        write_json(summary, Path("reports/metrics") / f"train_{method}.json")
        run.log_metrics({k: float(v) for k, v in summary.items() if isinstance(v, (int, float))})
        run_info = getattr(run, "active_run", lambda: None)()
        write_json({"mlflow_run_id": run_info.info.run_id if run_info else None}, out_dir / "run.json")


if __name__ == "__main__":
    run_stage(f"train@{sys.argv[1]}", lambda: main(sys.argv[1]))
