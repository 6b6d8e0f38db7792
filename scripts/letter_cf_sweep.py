"""LETTER's collaborative weight (alpha) swept on a workspace `dvc repro` has filled: for each alpha, the
`letter` tokenizer block trained with that weight alone changed, and its final collaborative loss (against
chance, ln of the batch size), reconstruction loss, collision rate, epochs run, and how often an item's
first code is shared by its 10 nearest SASRec neighbours (against chance). Writes a Markdown table.

    python scripts/letter_cf_sweep.py --workspace DIR [--weights 0.1 1 4] [--block letter] [--out FILE]

Each training is the tokenize@letter stage's own (pipeline.tokenizers.tokenize), into a temporary folder of
the workspace; the workspace's recorded outputs are not touched.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True,
                    help="a folder whose params.yaml and data/ (embeddings, SASRec's item embeddings) dvc repro wrote")
    ap.add_argument("--weights", type=float, nargs="+", default=[0.1, 1.0, 4.0])
    ap.add_argument("--block", default="letter", help="the tokenizers: block to sweep")
    ap.add_argument("--out", type=Path, default=None, help="Markdown table (default: print only)")
    args = ap.parse_args()
    os.chdir(args.workspace)  # the stages' paths are relative to the workspace

    from pipeline import paths
    from pipeline.config import load_params
    from pipeline.tokenizers.item_vectors import load_embeddings
    from pipeline.tokenizers.letter import neighbour_code_agreement
    from pipeline.tokenizers.registry import kind_of
    from pipeline.tokenizers.tokenize import tokenize

    params = load_params()
    base = params.tokenizer(args.block)
    sasrec = load_embeddings(paths.model_dir("sasrec") / "item_embeddings.safetensors")
    rows = []
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        for weight in args.weights:
            block = base.model_copy(update={"collaborative_weight": weight})
            out_dir, curve = Path(tmp) / f"alpha_{weight:g}", Path(tmp) / f"alpha_{weight:g}.csv"
            started = time.perf_counter()
            final = tokenize(block, params.seed, out_dir, curve, log=lambda _: None)
            seconds = time.perf_counter() - started
            codes = kind_of(block).derive_ids(block, out_dir, log=lambda _: None).codes
            agreement = neighbour_code_agreement(codes, sasrec, k=10, levels=1)
            row = {"alpha": weight, "epochs": final.get("epochs_run"), "cf": final.get("collaborative_loss"),
                   "recon": final.get("recon_loss"), "collisions": final.get("collision_rate"),
                   "first_code": agreement["share"], "chance": agreement["chance"], "seconds": seconds}
            rows.append(row)
            print(row, flush=True)
    chance_cf = math.log(base.batch_size)
    lines = [f"| alpha | epochs | collaborative loss (chance {chance_cf:.2f}) | reconstruction | collision rate | "
             "first code shared with 10 SASRec neighbours (chance) | seconds |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['alpha']:g} | {r['epochs']} | {r['cf']:.3f} | {r['recon']:.3f} | {r['collisions']:.4f} | "
                     f"{r['first_code']:.4f} ({r['chance']:.4f}) | {r['seconds']:.0f} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
