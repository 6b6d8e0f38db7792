"""DVC stage `tokenize@<tokenizer>`: train the tokenizer of block tokenizers.<tokenizer>
(docs/method_reference.md §3)."""
import sys

from pipeline import paths
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage
from pipeline.runtime.reproducible import portable_cpu_numerics
from pipeline.tokenizers.tokenize import tokenize


def main(name: str) -> None:
    portable_cpu_numerics()  # before any tensor work: the same bytes on every x86-64 CPU
    params = load_params()
    block = params.tokenizer(name)
    curve = paths.PLOTS_DIR / f"tokenize_{name}.csv"
    out_dir = paths.tokenizer_dir(name)
    section = {"data": params.data.model_dump(), "filter": params.filter.model_dump(),
               "embed": params.embed.model_dump(), "tokenizer": block.model_dump(), "seed": params.seed}
    every = max(1, getattr(block, "epochs", 1) // 20)  # a readable log: ~20 lines per run (an external block: none)

    def progress(epoch: int, metrics: dict) -> None:
        run.log_metrics(metrics, step=epoch)
        if epoch % every == 0 or epoch == 1:
            print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items()))

    with tracking.stage_run(f"tokenize@{name}", params.data.dataset_name, section, group=f"tokenizer:{name}") as run:
        final = as_flow(tokenize, name=f"tokenize@{name}")(block, params.seed, out_dir, curve, on_epoch=progress)
        write_json(final, paths.METRICS_DIR / f"tokenize_{name}.json")
        run.log_artifact(str(curve))
        run.log_artifact(str(out_dir / "config.json"))


if __name__ == "__main__":
    run_stage(f"tokenize@{sys.argv[1]}", lambda: main(sys.argv[1]))
