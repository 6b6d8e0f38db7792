"""Train and evaluate methods outside DVC, Prefect and MLflow: for a GPU server that has only torch.

The stages' own code (`pipeline.training.standalone.train_and_evaluate`) runs on a workspace that holds a
`params.yaml` and the `data/interim/sequences` and `data/processed/semantic_ids` outputs of a `dvc repro` made
elsewhere (copy them over). Needs torch, transformers, safetensors, pyarrow, pydantic, pyyaml and tqdm only.

    python scripts/run_method.py --workspace /path/to/ws --method tiger \
        --set defaults.generative.train.samples_per_epoch=0 --set ++methods.tiger.train.time_budget_minutes=8 \
        --report results/beauty_tiger.json

`--set` takes params.yaml keys from its top, exactly as `dvc exp run -S` does: `key=value` sets a key the file
has (`defaults.generative.train.epochs=2`: every generative method's), `++key=value` also adds one a block
lacks (`++methods.tiger.train.lr=0.001`: TIGER's alone, which takes its train block from its family).

Prints the per-epoch log, then writes {method, params overrides, training summary, history, test metrics, training
seconds}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GENREC_ORCHESTRATOR", "none")
os.environ.setdefault("GENREC_TRACKING", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml key from its top, as dvc exp run -S takes it (repeat for more)")
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args()
    report = args.report.resolve()
    os.chdir(args.workspace)

    from pipeline import paths
    from pipeline.config import apply_overrides, params_from_dict
    from pipeline.training.standalone import train_and_evaluate, write_result

    params = params_from_dict(apply_overrides(yaml.safe_load(Path("params.yaml").read_text()), args.set))
    result = train_and_evaluate(params, args.method, paths.model_dir(args.method), paths.results_dir(args.method))
    write_result({**result, "overrides": args.set}, report)
    print(json.dumps({"summary": result["summary"], "test": result["test"]}, default=float))


if __name__ == "__main__":
    from pipeline.config import ParamsError
    from pipeline.runtime.precision import PrecisionError
    from pipeline.tokenizers.semantic_ids import SemanticIdError

    try:
        main()
    except (ParamsError, PrecisionError, SemanticIdError) as exc:  # a bad setting or input: its message, no traceback
        sys.exit(f"run_method: error: {exc}")
