"""DVC stage `embed`: item text (a template over metadata fields) -> one vector per item."""
from pipeline import paths
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage
from pipeline.runtime.reproducible import portable_cpu_numerics
from pipeline.tokenizers.embedding import embed_items

METRICS_FILE = paths.METRICS_DIR / "embed.json"


def main() -> None:
    portable_cpu_numerics()  # before any tensor work: the same bytes on every x86-64 CPU
    params = load_params()
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump(),
               "embed": params.embed.model_dump()}
    with tracking.stage_run("embed", params.data.dataset_name, section) as run:  # the run spans the stage's work
        stats = as_flow(embed_items, name="embed")(params, paths.ITEMS, paths.EMBEDDINGS_DIR)
        # items/s varies run to run: logged to MLflow, kept out of the DVC metrics so they stay comparable
        write_json({k: v for k, v in stats.items() if k not in ("encode_seconds", "items_per_second")}, METRICS_FILE)
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        run.log_artifact(str(paths.EMBEDDINGS_DIR / "texts.parquet"))
        run.log_artifact(str(paths.EMBEDDINGS_DIR / "meta.json"))


if __name__ == "__main__":
    run_stage("embed", main)
