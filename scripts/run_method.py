"""Train and evaluate methods outside DVC, Prefect and MLflow: for a GPU server that has only torch.

The stages' own code (`pipeline.training.method`) runs on a workspace that holds a `params.yaml` and the
`data/interim/sequences` and `data/processed/semantic_ids` outputs of a `dvc repro` made elsewhere
(copy them over). Needs torch, transformers, safetensors, pyarrow, pydantic, pyyaml and tqdm only.

    python scripts/run_method.py --workspace /path/to/ws --method tiger \
        --set methods.tiger.train.samples_per_epoch=0 --set methods.tiger.train.time_budget_minutes=8 \
        --report results/beauty_tiger.json

Prints the per-epoch log, then writes {params overrides, training summary, history, test metrics}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--report", type=Path, required=True)
    args = ap.parse_args()
    report = args.report.resolve()
    os.chdir(args.workspace)

    from pipeline.config import params_from_dict, set_dotted
    from pipeline.evaluation.evaluate import evaluate_model
    from pipeline.training.method import train_method

    raw = yaml.safe_load(Path("params.yaml").read_text())
    for assignment in args.set:
        set_dotted(raw, assignment)
    params = params_from_dict(raw)
    t0 = time.perf_counter()
    model_dir = Path("data/models") / args.method
    summary, history = train_method(params, args.method, model_dir)
    train_s = time.perf_counter() - t0
    metrics = evaluate_model(model_dir, Path("data/results") / args.method, params.evaluate)
    result = {"method": args.method, "overrides": args.set, "train_seconds": round(train_s, 1),
              "summary": summary, "test": metrics, "history": history}
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(json.dumps(result, indent=2, default=float) + "\n")
    print(json.dumps({"summary": summary, "test": metrics}, default=float))


if __name__ == "__main__":
    from pipeline.config import ParamsError
    from pipeline.runtime.precision import PrecisionError
    from pipeline.tokenizers.semantic_ids import SemanticIdError

    try:
        main()
    except (ParamsError, PrecisionError, SemanticIdError) as exc:  # a bad setting or input: its message, no traceback
        sys.exit(f"run_method: error: {exc}")
