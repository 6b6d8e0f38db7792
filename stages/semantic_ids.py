"""DVC stage `semantic_ids@<tokenizer>`: every item's codes plus the collision token; unique by construction."""
import sys

from pipeline import paths
from pipeline.config import load_params
from pipeline.io import write_json
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage
from pipeline.runtime.reproducible import portable_cpu_numerics
from pipeline.tokenizers.tokenize import semantic_ids


def main(name: str) -> None:
    portable_cpu_numerics()  # before any tensor work: the same bytes on every x86-64 CPU
    params = load_params()
    block = params.tokenizer(name)
    metrics = paths.METRICS_DIR / f"semantic_ids_{name}.json"
    section = {"data": params.data.model_dump(), "embed": params.embed.model_dump(),
               "tokenizer": block.model_dump(), "seed": params.seed}
    with tracking.stage_run(f"semantic_ids@{name}", params.data.dataset_name, section,
                            group=f"tokenizer:{name}") as run:
        stats = as_flow(semantic_ids, name=f"semantic_ids@{name}")(block, paths.tokenizer_dir(name),
                                                                     paths.semantic_ids_dir(name))
        write_json(stats, metrics)
        run.log_metrics({k: float(v) for k, v in stats.items() if isinstance(v, (int, float, bool))})
        run.log_artifact(str(metrics))


if __name__ == "__main__":
    run_stage(f"semantic_ids@{sys.argv[1]}", lambda: main(sys.argv[1]))
