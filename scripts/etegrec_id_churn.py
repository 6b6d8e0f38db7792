"""How many item IDs one ETEGRec tokenizer epoch moves, per setting, with its controls.

Builds the `etegrec` block on a workspace's `data/` (the RQ-VAE and IDs `dvc repro` left there), trains its
tokenizer for one epoch of the block's schedule with the alignment terms off (their weights, 3e-4 and 1e-4,
are small beside the quantisation loss), re-derives every item's ID and prints the share that changed,
overall and per level. Each `--variant` is a name and overrides; `--set` and a variant's overrides take
params.yaml keys from its top, exactly as `dvc exp run -S` does (`++` adds a key the block lacks). The controls
that make the measurement readable:

- `lr0:methods.etegrec.backbone.tokenizer_lr=0`: nothing moves, so 0 % must change (else the re-derivation
  itself differs from the IDs the run started from);
- `methods.etegrec.backbone.tokenizer_precision=train` against `fp32`: bf16 autocast in the tokenizer's forward
  pass;
- `methods.etegrec.backbone.codebook_weight_decay=0.05` against `0`: AdamW decay on the codebooks.

    python scripts/etegrec_id_churn.py --workspace /path/to/ws --set defaults.generative.train.epochs=6 \
        --variant lr0:methods.etegrec.backbone.tokenizer_lr=0 \
        --variant paper:methods.etegrec.backbone.tokenizer_lr=1e-4
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("GENREC_ORCHESTRATOR", "none")


def parse_variants(specs: list[str]) -> list[tuple[str, list[str]]]:
    variants = []
    for spec in specs:
        name, sep, assignments = spec.partition(":")
        if not sep or not name:
            raise SystemExit(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        variants.append((name, [a for a in assignments.split(",") if a]))
    return variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="etegrec")
    ap.add_argument("--workspace", type=Path, default=REPO, help="a directory with params.yaml and data/")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="a named setting: params.yaml keys from its top (repeat the option for more)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="params.yaml keys from its top for every variant, as dvc exp run -S takes them")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    variants = parse_variants(args.variant)
    os.chdir(args.workspace)

    import torch

    from pipeline import paths
    from pipeline.config import apply_overrides, params_from_dict
    from pipeline.data.splits import load_splits
    from pipeline.training.method import build_method
    from pipeline.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    raw = yaml.safe_load(Path("params.yaml").read_text())
    block = f"{'methods' if args.method in (raw.get('methods') or {}) else 'more_methods'}.{args.method}"
    alignment_off = [f"++{block}.backbone.{key}=0.0" for key in ("sia_weight", "psa_weight", "freeze_below")]
    # every variant's params first: a bad key stops before any training
    settings = [(name, assignments, params_from_dict(apply_overrides(raw, [*alignment_off, *args.set, *assignments])))
                for name, assignments in variants]
    splits = load_splits(paths.SEQUENCES_DIR)
    print("| setting | overrides | SQ loss | IDs changed | level 1 | level 2 | level 3 |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for name, assignments, params in settings:
        seed = params.method_seed(args.method)
        torch.manual_seed(seed)
        model, _ = build_method(params, args.method)
        trainer = Trainer(model, splits["train"], splits["valid"], params.method(args.method).train,
                          paths.study_dir("etegrec_id_churn"), seed=seed, device="cpu", log=lambda *_: None)
        phase = model.current_phase(trainer.phase_at(0))
        if phase.name != "tokenizer":
            raise SystemExit(f"{args.method}: its first epoch is a {phase.name} epoch, not a tokenizer epoch")
        loss = trainer.train_epoch(phase)
        s = model.refresh_ids()
        levels = sorted(k for k in s if k.startswith("ids_changed_l"))
        print(f"| {name} | {', '.join(assignments) or '(block)'} | {loss:.4f} | {s['ids_changed']:.1%} | "
              + " | ".join(f"{s[k]:.1%}" for k in levels) + " |", flush=True)


if __name__ == "__main__":
    from pipeline.config import ParamsError

    try:
        main()
    except ParamsError as exc:  # a bad --set, --variant or params.yaml: its message, no traceback
        sys.exit(f"etegrec_id_churn: error: {exc}")
