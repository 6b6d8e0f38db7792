"""IDs a user brings (``pipeline.tokenizers.external``): ``tokenize`` checks and stores the file's codes,
``semantic_ids`` reads them back; no code vectors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import polars as pl

from pipeline.io import atomic_dir, sha256_file, write_curve, write_json
from pipeline.tokenizer_schemas import ExternalTokenizer
from pipeline.tokenizers.external import CODES_FILE, read_external_codes, write_codes
from pipeline.tokenizers.kinds.base import DerivedCodes, TokenizerKind
from pipeline.tokenizers.semantic_ids import codebook_utilisation, collision_stats, read_id_table


class ExternalKind(TokenizerKind):
    params = ExternalTokenizer

    @classmethod
    def train(cls, block: ExternalTokenizer, seed: int, out_dir: Path, curve_path: Path,
              log: Callable[[str], None] = print, on_epoch: Callable[[int, dict], None] | None = None) -> dict:
        """The file's codes for the catalogue, checked, into ``out_dir``; the metrics (and the one-row curve)
        give their utilisation and collisions."""
        source, items_path = Path(block.inputs[0]), Path(block.inputs[-1])
        codes, K, facts = read_external_codes(source, pl.read_parquet(items_path), fmt=block.format, key=block.key,
                                              codebook_size=block.codebook_size)
        stats = {"items": len(codes), "levels": codes.shape[1], "codebook_size": K, **facts,
                 **{f"util_l{level + 1}": u for level, u in enumerate(codebook_utilisation(codes, K))},
                 **collision_stats(codes)}
        log(f"{source}: codes of {len(codes):,} items ({facts['ignored_items']:,} of the file's items are not in "
            f"the catalogue), {codes.shape[1]} levels of {K} codes, collision rate {stats['collision_rate']:.4f}")
        with atomic_dir(out_dir) as tmp:
            write_codes(codes, tmp / CODES_FILE)
            write_json({"model": "external", "source": str(source), "sha256": sha256_file(source),
                        "format": facts["format"], "key": block.key, "codebook_size": K, "levels": codes.shape[1]},
                       tmp / "config.json")
        write_curve([{"epoch": 0, **{k: v for k, v in stats.items() if isinstance(v, (int, float))}}], curve_path)
        return stats

    @classmethod
    def derive_ids(cls, block: ExternalTokenizer, tokenizer_dir: Path,
                   log: Callable[[str], None] = print) -> DerivedCodes:
        codes = read_id_table(Path(tokenizer_dir) / CODES_FILE)  # the same item -> columns layout, checked
        K = int(json.loads((Path(tokenizer_dir) / "config.json").read_text())["codebook_size"])
        return DerivedCodes(codes, K)
