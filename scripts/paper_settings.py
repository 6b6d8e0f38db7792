"""The papers' model sizes and training budgets for every method of the default run, as one DVC experiment.

The default run is sized for a 2-core CPU (its stage times: README, "Budgets"): a 2+2-layer T5 and 10 epochs for
every generative method, validation on 2,000 users. This script turns those into the papers' settings (below, each
with its source) and runs them as a named experiment, unchanged on a CPU or a GPU (CUDA is used when present):

    python scripts/paper_settings.py            # prints the `dvc exp run` command
    python scripts/paper_settings.py --run      # runs it: dvc exp run -n paper-settings -S ...
    python scripts/paper_settings.py --run --encoder   # also the papers' text encoder (needs it in the HF cache)

Only sizes and budgets change; every method keeps the shared optimiser settings of the default run, so the
comparison stays one of equal budgets. `dvc exp show` then lists the experiment beside the default run.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# TIGER §4.1: 4 encoder and 4 decoder layers, d_model 128, 6 heads of 64, FFN 1024, dropout 0.1. DECOR and LETTER
# train on TIGER's backbone (their papers' implementation sections).
T5_PAPER = {"num_layers": 4, "num_decoder_layers": 4, "d_model": 128, "num_heads": 6, "d_kv": 64, "d_ff": 1024,
            "dropout": 0.1}
# ETEGRec §5.5: 6 + 6 layers, d_model 128, FFN 512, 4 heads of 64.
T5_ETEGREC = {"num_layers": 6, "num_decoder_layers": 6, "d_model": 128, "num_heads": 4, "d_kv": 64, "d_ff": 512}
# DiscRec §IV-A4: TIGER's T5 (4 layers, d 128, 6 heads of 64, FFN 1024) and its branch MLP of 1024.
DISCREC_BRANCH = {"branch_ff": 1024}
# DECOR appendix: at most 200 epochs, early stopping with patience 20, 10,000 warm-up steps; validation on every
# user (the papers do not subsample it).
TRAIN_PAPER = {"epochs": 200, "patience": 20, "warmup_steps": 10000, "max_eval_samples": 0}
# SASRec (Kang & McAuley 2018): trained to convergence; 200 epochs with the same early stopping.
TRAIN_SASREC = {"epochs": 200, "patience": 20, "max_eval_samples": 0}
ENCODER = "sentence-transformers/sentence-t5-base"  # DECOR, ETEGRec, LETTER: sentence-t5-base (768-d)

# The generative family's backbone and budget (params.yaml, defaults.generative), then each method's own keys.
PAPER = {
    "defaults.generative.backbone": T5_PAPER,
    "defaults.generative.train": TRAIN_PAPER,
    "methods.sasrec.train": TRAIN_SASREC,
    "methods.etegrec.backbone": T5_ETEGREC,
    "methods.discrec_t.backbone": DISCREC_BRANCH,
    "methods.discrec_l.backbone": DISCREC_BRANCH,
}


def has_key(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def overrides(encoder: bool = False, params: Path = REPO / "params.yaml") -> list[str]:
    """`KEY=VALUE` assignments for `dvc exp run -S`: a key params.yaml has is set as it is, one it lacks (a method
    that takes the key from its family) is added to the method's block with Hydra's `++`."""
    import yaml

    raw = yaml.safe_load(params.read_text())
    out = []
    for section, values in PAPER.items():
        for key, value in values.items():
            dotted = f"{section}.{key}"
            out.append(f"{'' if has_key(raw, dotted) else '++'}{dotted}={value}")
    if encoder:
        out.append(f"embed.model={ENCODER}")
    return out


def command(encoder: bool = False, name: str = "paper-settings") -> list[str]:
    cmd = ["dvc", "exp", "run", "-n", name]
    for assignment in overrides(encoder):
        cmd += ["-S", assignment]
    return cmd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="run the experiment (default: print the command)")
    ap.add_argument("--encoder", action="store_true", help=f"also embed the items with {ENCODER}")
    ap.add_argument("--name", default="paper-settings", help="the experiment's name in `dvc exp show`")
    args = ap.parse_args()
    cmd = command(args.encoder, args.name)
    print(shlex.join(cmd))
    if args.run:
        sys.exit(subprocess.run(cmd, cwd=REPO).returncode)


if __name__ == "__main__":
    main()
