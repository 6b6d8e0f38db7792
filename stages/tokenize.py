"""DVC stage `tokenize`: train the RQ-VAE on the item embeddings (methods.md §3)."""
from pathlib import Path

from pipeline import tracking
from pipeline.config import load_params
from pipeline.flows import run_stage, tokenize_flow
from pipeline.io import write_json

EMBEDDINGS = Path("data/processed/embeddings/embeddings.npy")
OUT_DIR = Path("data/processed/rqvae")
CURVE = Path("reports/plots/tokenize.csv")
METRICS = Path("reports/metrics/tokenize.json")


def main() -> None:
    params = load_params()
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump(),
               "embed": params.embed.model_dump(), "tokenize": params.tokenize.model_dump(), "seed": params.seed}
    with tracking.stage_run("tokenize", params.data.dataset_name, section) as run:
        final = tokenize_flow(params, EMBEDDINGS, OUT_DIR, CURVE,
                              on_epoch=lambda epoch, m: run.log_metrics(m, step=epoch))
        write_json(final, METRICS)
        run.log_artifact(str(CURVE))
        run.log_artifact(str(OUT_DIR / "config.json"))


if __name__ == "__main__":
    run_stage("tokenize", main)
