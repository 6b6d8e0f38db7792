"""DVC stage `filter`: raw files -> k-core sequences, dense ids, leave-one-out samples, stats."""
from pipeline import paths, tracking
from pipeline.config import load_params
from pipeline.data.prepare import prepare
from pipeline.flows import as_flow, run_stage
from pipeline.io import write_json

METRICS = paths.METRICS / "filter.json"


def main() -> None:
    params = load_params()
    stats = as_flow(prepare, name="filter")(params, paths.RAW, paths.SEQUENCES)
    write_json(stats, METRICS)
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump()}
    with tracking.stage_run("filter", params.data.dataset_name, section) as run:
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        run.log_artifact(str(METRICS))


if __name__ == "__main__":
    run_stage("filter", main)
