"""Where and how DECOR's token composition collapses (docs/decor_collapse.md): per-sample composition weights \
during training.

Trains params.yaml's DECOR block (methods.<name> or more_methods.<name>) with the shared trainer on this
workspace's data and, every ``--every`` training steps, records ``Decor.diagnose`` of the step's own batch (its
context u as the forward computed it), per level:

- the per-sample weights: mean and share > 0.99 of each sample's largest weight, mean normalised entropy;
- which code wins: distinct argmax codes over the batch, the most frequent one and its share;
- Table 3's "active" codes (weight >= 1/K) counted two ways: over the batch mean of the weights (the train
  stage's epoch statistic) and per sample (a code counts when it reaches 1/K for >= 1 % of the samples);
- the attention's scale: mean query norm, the winning code's key norm against the median key norm, the
  score gap between the best and second-best code (the block's scores: q.k / sqrt(d) or cos / temperature),
  and the value norms;
- how much the context differs across users: the mean pairwise cosine of the pooled contexts u and of the
  queries W_Q u over the batch (1 = every user asks the same question).

The tokenizer's own level usage is printed beside it (Table 3's first column). Writes one CSV row per
record; prints the rows as it goes.

    python scripts/decor_diagnosis.py --method decor --steps 1200 --every 50 --out decor_diagnosis.csv \
        [--set methods.decor.backbone.scores=dot]

``--set`` takes params.yaml keys from its top, as `dvc exp run -S` does (``++`` adds a key a block lacks).
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths  # noqa: E402
from pipeline.config import ParamsError, apply_overrides, params_from_dict  # noqa: E402
from pipeline.data.splits import load_splits  # noqa: E402
from pipeline.training.method import build_method  # noqa: E402
from pipeline.training.trainer import Trainer  # noqa: E402

PRINTED = ("max_mean", "onehot", "distinct", "top_winner_share", "active", "gap", "winner_key", "median_key")


def print_row(row: dict) -> None:
    print(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
                   if k in ("step", "context_cos_mean", "query_cos_mean")
                   or k.startswith(("l1_", "l2_", "l3_")) and any(s in k for s in PRINTED)), flush=True)


def record_while_training(model, every: int) -> list[dict]:
    """Rows of ``model.diagnose`` every ``every`` training steps, from each step's batch with its context (the
    forward's ``with_decoder_context``, once per step); validation passes (eval mode) are not counted."""
    rows: list[dict] = []
    state = {"step": 0}
    original = model.with_decoder_context

    def recording(batch, *args, **kwargs):
        batch = original(batch, *args, **kwargs)
        if model.training:
            if state["step"] % every == 0:
                rows.append({"step": state["step"], **model.diagnose(batch)})
                print_row(rows[-1])
            state["step"] += 1
        return batch

    model.with_decoder_context = recording
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="decor")
    ap.add_argument("--steps", type=int, default=1200, help="training steps in all (epochs of --samples)")
    ap.add_argument("--samples", type=int, default=25_600, help="samples per epoch (a fresh random subset)")
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--out", type=Path, default=Path("decor_diagnosis.csv"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml key from its top, as dvc exp run -S takes it, e.g. "
                         "methods.decor.backbone.scores=dot")
    args = ap.parse_args()
    import yaml

    params = params_from_dict(apply_overrides(yaml.safe_load(Path("params.yaml").read_text()), args.set))
    block = params.method(args.method)
    model, _ = build_method(params, args.method)
    if not getattr(model.config, "composition", False):
        sys.exit(f"{args.method} has no composition to diagnose")
    splits = load_splits(paths.SEQUENCES_DIR)
    K = model.config.codebook_size
    for level in range(model.code_levels):
        used = torch.unique(model.item_codes[:, level]).numel()
        print(f"tokenizer: level {level + 1} uses {used}/{K} codes ({used / K:.1%}) across "
              f"{model.config.n_items} items")
    per_epoch = args.samples // block.train.batch_size
    epochs = max(1, math.ceil(args.steps / per_epoch))
    # eager steps: the recording hook runs inside every training forward (a compiled step would trace it)
    cfg = block.train.model_copy(update={"epochs": epochs, "samples_per_epoch": args.samples,
                                         "max_eval_samples": 300, "eval_every": epochs, "compile": False})
    rows = record_while_training(model, args.every)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, splits["train"], splits["valid"], cfg, out, seed=params.method_seed(args.method),
                          device=block.device, log=print)
        trainer.fit()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} records)")


if __name__ == "__main__":
    try:
        main()
    except ParamsError as exc:  # a bad --set or params.yaml: its message, no traceback
        sys.exit(f"decor_diagnosis: error: {exc}")
