"""Assemble Amazon Beauty as LETTER ships it, with item text, for the `local` source.

LETTER's `Beauty.inter.json` has no item text; IDGenRec's title fragments are keyed by ASIN, and
`Beauty.item2asin.tsv` maps LETTER's item ids to ASINs (LETTER's released Beauty data). This writes
`<out>/Beauty.inter.json` (a copy) and `<out>/Beauty.item.json` = {item: {"title": ...}} into a data
directory that git ignores. Then:

    python scripts/prepare_letter_beauty.py --shared ../shared/data --out data/local/beauty
    dvc exp run -S data.source=local -S data.local.dir=data/local/beauty -S data.local.name=Beauty
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline import paths  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    ap.add_argument("--out", type=Path, default=paths.LOCAL_DIR / "beauty")
    args = ap.parse_args()
    letter, idgenrec = args.shared / "letter-beauty", args.shared / "idgenrec-beauty"
    item2asin = {}
    for line_no, line in enumerate((letter / "Beauty.item2asin.tsv").read_text().splitlines(), 1):
        if line_no == 1 and line.startswith("item_id"):
            continue  # header
        parts = line.split("\t")
        if len(parts) != 2:
            raise SystemExit(f"{letter / 'Beauty.item2asin.tsv'}:{line_no}: expected 'item<TAB>asin'")
        item2asin[parts[0]] = parts[1]
    texts = {}
    for line in (idgenrec / "item_generative_indexing_phase_0.txt").read_text().splitlines():
        asin, _, text = line.partition(" ")
        texts[asin] = text.strip()
    missing = [i for i, a in item2asin.items() if a not in texts]
    if missing:
        raise SystemExit(f"{len(missing)} items have no text, e.g. {missing[:3]}")
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(letter / "Beauty.inter.json", args.out / "Beauty.inter.json")
    items = {i: {"title": texts[a], "asin": a} for i, a in item2asin.items()}
    (args.out / "Beauty.item.json").write_text(json.dumps(items))
    print(f"wrote {args.out}/Beauty.inter.json and Beauty.item.json ({len(items):,} items with text)")


if __name__ == "__main__":
    main()
