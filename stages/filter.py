"""DVC stage `filter`: raw files -> k-core sequences, dense ids, leave-one-out samples, stats."""
from pipeline import paths
from pipeline.config import load_params
from pipeline.data.prepare import prepare
from pipeline.io import write_json
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage

METRICS_FILE = paths.METRICS_DIR / "filter.json"


def main() -> None:
    params = load_params()
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump()}
    with tracking.stage_run("filter", params.data.dataset_name, section) as run:  # the run spans the stage's work
        stats = as_flow(prepare, name="filter")(params, paths.RAW_DIR, paths.SEQUENCES_DIR)
        write_json(stats, METRICS_FILE)
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        run.log_artifact(str(METRICS_FILE))


if __name__ == "__main__":
    run_stage("filter", main)
