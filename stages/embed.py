"""DVC stage `embed`: item text (a template over metadata fields) -> one vector per item."""
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params
from pipeline.flows import embed_flow, run_stage
from pipeline.io import write_json

ITEMS = Path("data/interim/sequences/items.parquet")
OUT_DIR = Path("data/processed/embeddings")
METRICS = Path("reports/metrics/embed.json")


def main() -> None:
    params = load_params()
    stats = embed_flow(params, ITEMS, OUT_DIR)
    # items/s varies run to run: logged to MLflow, kept out of the DVC metrics so they stay comparable
    write_json({k: v for k, v in stats.items() if k not in ("encode_seconds", "items_per_second")}, METRICS)
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump(), "embed": params.embed.model_dump()}
    with tracking.stage_run("embed", params.data.dataset_name, section) as run:
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float))})
        run.log_artifact(str(OUT_DIR / "texts.parquet"))
        run.log_artifact(str(OUT_DIR / "meta.json"))


if __name__ == "__main__":
    run_stage("embed", main)
