"""DVC stage `semantic_ids`: every item's codes plus the collision token; unique by construction."""
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params
from pipeline.flows import run_stage, semantic_ids_flow
from pipeline.io import write_json

EMBEDDINGS = Path("data/processed/embeddings/embeddings.npy")
RQVAE_DIR = Path("data/processed/rqvae")
OUT_DIR = Path("data/processed/semantic_ids")
METRICS = Path("reports/metrics/semantic_ids.json")


def main() -> None:
    params = load_params()
    stats = semantic_ids_flow(params, EMBEDDINGS, RQVAE_DIR, OUT_DIR)
    write_json(stats, METRICS)
    section = {"data": params.data.model_dump(), "embed": params.embed.model_dump(),
               "tokenize": params.tokenize.model_dump(), "seed": params.seed}
    with tracking.stage_run("semantic_ids", params.data.dataset_name, section) as run:
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float, bool))})
        run.log_artifact(str(METRICS))


if __name__ == "__main__":
    run_stage("semantic_ids", main)
