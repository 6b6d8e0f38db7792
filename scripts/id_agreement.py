"""How well each tokenizer's IDs follow the collaborative signal: for every item, the share of its 10 nearest
neighbours by SASRec item embedding (cosine) that share its first code (and its first two codes), averaged over
items, beside the share a random item would have. Reads the IDs `dvc repro` left in data/processed/semantic_ids.

    python scripts/id_agreement.py [--vectors data/models/sasrec/item_embeddings.safetensors] [--k 10] \
        [--workspace DIR]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from pipeline import paths
    from pipeline.config import load_params
    from pipeline.tokenizers.item_vectors import load_embeddings
    from pipeline.tokenizers.letter import neighbour_code_agreement
    from pipeline.tokenizers.semantic_ids import read_id_table

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=Path, default=paths.model_dir("sasrec") / "item_embeddings.safetensors",
                    help="item vectors, relative to --workspace (default: SASRec's, as train@sasrec writes them)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--workspace", type=Path, default=REPO,
                    help="the folder whose params.yaml and data/ it reads (default: this repository)")
    args = ap.parse_args()
    root = args.workspace
    vectors = load_embeddings(root / args.vectors)
    print("| tokenizer | first code shared | chance | first two codes shared | chance |\n"
          "| --- | --- | --- | --- | --- |")
    for name in load_params(root / "params.yaml").tokenizers:
        table = root / paths.semantic_ids_dir(name) / "ids.parquet"
        if not table.exists():
            continue
        ids = read_id_table(table)
        one, two = (neighbour_code_agreement(ids, vectors, k=args.k, levels=n) for n in (1, 2))
        print(f"| {name} | {one['share']:.4f} | {one['chance']:.4f} | {two['share']:.4f} | {two['chance']:.4f} |")


if __name__ == "__main__":
    main()
