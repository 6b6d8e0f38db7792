"""DVC stage `filter`: raw files -> k-core sequences, dense ids, leave-one-out samples, stats."""
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params
from pipeline.flows import filter_flow, run_stage
from pipeline.io import write_json

RAW_DIR = Path("data/raw")
OUT_DIR = Path("data/interim/sequences")
METRICS = Path("reports/metrics/filter.json")


def main() -> None:
    params = load_params()
    stats = filter_flow(params, RAW_DIR, OUT_DIR)
    write_json(stats, METRICS)
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump()}
    with tracking.stage_run("filter", params.data.dataset_name, section) as run:
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        run.log_artifact(str(METRICS))


if __name__ == "__main__":
    run_stage("filter", main)
