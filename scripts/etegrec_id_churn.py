"""How many item IDs one ETEGRec tokenizer epoch moves, per setting, with its controls.

Builds the `etegrec` block on a workspace's `data/` (the RQ-VAE and IDs `dvc repro` left there), trains its
tokenizer for one epoch of the block's schedule with the alignment terms off (their weights, 3e-4 and 1e-4,
are small beside the quantisation loss), re-derives every item's ID and prints the share that changed,
overall and per level. Each `--variant` is a name and block-relative overrides; the controls that make the
measurement readable:

- `lr0:backbone.tokenizer_lr=0`: nothing moves, so 0 % must change (else the re-derivation itself differs
  from the IDs the run started from);
- `backbone.tokenizer_precision=train` against `fp32`: bf16 autocast in the tokenizer's forward pass;
- `backbone.codebook_weight_decay=0.05` against `0`: AdamW decay on the codebooks.

    python scripts/etegrec_id_churn.py --workspace /path/to/ws --set train.epochs=6 \
        --variant lr0:backbone.tokenizer_lr=0 --variant paper:backbone.tokenizer_lr=1e-4
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="etegrec")
    ap.add_argument("--workspace", type=Path, default=REPO, help="a directory with params.yaml and data/")
    ap.add_argument("--variant", action="append", required=True, metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                    help="a named setting: block-relative overrides (repeat the option for more)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="block-relative overrides for every variant")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    variants = []
    for spec in args.variant:
        name, sep, assignments = spec.partition(":")
        if not sep or not name:
            raise SystemExit(f"--variant {spec!r}: expected NAME:KEY=VALUE[,KEY=VALUE]")
        variants.append((name, [a for a in assignments.split(",") if a]))
    os.chdir(args.workspace)

    import torch

    from pipeline import paths
    from pipeline.config import params_from_dict, set_dotted
    from pipeline.data.splits import load_splits
    from pipeline.training.method import build_method
    from pipeline.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    splits = load_splits(paths.SEQUENCES_DIR)
    print("| setting | overrides | SQ loss | IDs changed | level 1 | level 2 | level 3 |\n"
          "| --- | --- | --- | --- | --- | --- | --- |")
    for name, assignments in variants:
        raw = yaml.safe_load(Path("params.yaml").read_text())
        section = "methods" if args.method in (raw.get("methods") or {}) else "more_methods"
        block = raw[section][args.method]
        for assignment in ["backbone.sia_weight=0.0", "backbone.psa_weight=0.0", "backbone.freeze_below=0.0",
                           *args.set, *assignments]:
            set_dotted(block, assignment)
        params = params_from_dict(raw)
        seed = params.method_seed(args.method)
        torch.manual_seed(seed)
        model, _ = build_method(params, args.method)
        trainer = Trainer(model, splits["train"], splits["valid"], params.method(args.method).train,
                          Path("data/studies/etegrec_id_churn"), seed=seed, device="cpu", log=lambda *_: None)
        phase = model.current_phase(trainer.phase_at(0))
        if phase.name != "tokenizer":
            raise SystemExit(f"{args.method}: its first epoch is a {phase.name} epoch, not a tokenizer epoch")
        loss = trainer.train_epoch(phase)
        s = model.refresh_ids()
        levels = sorted(k for k in s if k.startswith("ids_changed_l"))
        print(f"| {name} | {', '.join(assignments) or '(block)'} | {loss:.4f} | {s['ids_changed']:.1%} | "
              + " | ".join(f"{s[k]:.1%}" for k in levels) + " |", flush=True)


if __name__ == "__main__":
    main()
