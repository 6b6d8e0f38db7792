"""The `filter` stage's logic: raw files -> items, users, interactions and split tables + stats."""
from __future__ import annotations

import json
import time
from pathlib import Path

import polars as pl

from pipeline.config import Params
from pipeline.data.raw_files import MANIFEST
from pipeline.data.readers import DataError
from pipeline.data.sequences import build_sequences, leave_one_out, sequence_stats
from pipeline.data.sources.registry import source_for
from pipeline.io import atomic_dir, write_json, write_parquet

SEQUENCE_FILES = ("items", "users", "interactions", "train", "valid", "test")


def read_manifest(raw_dir: Path) -> dict:
    path = raw_dir / MANIFEST
    if not path.exists():
        raise DataError(f"{path}: missing; run the download stage first (dvc repro download)")
    return json.loads(path.read_text())


def prepare(params: Params, raw_dir: str | Path, out_dir: str | Path, log=print) -> dict:
    """Run the whole filter stage; returns the stats it wrote to ``out_dir/stats.json``."""
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = read_manifest(raw_dir)
    if manifest.get("source") != params.data.source:
        raise DataError(f"{raw_dir / MANIFEST}: holds source {manifest.get('source')!r} but params say "
                        f"data.source={params.data.source!r}; run the download stage again")
    fp = params.filter
    t0 = time.perf_counter()
    source = source_for(params.data)
    shown = source.shown_names(manifest["files"])  # the local source's errors name the user's own files
    source.check_raw(raw_dir)
    inter, item_text, report = source.read(raw_dir, manifest["files"], max_bad=fp.max_bad_lines, shown=shown)
    log(f"read {inter.height:,} interactions and {0 if item_text is None else item_text.height:,} item records "
        f"in {time.perf_counter() - t0:.1f}s")
    keep = None
    if fp.require_metadata:
        if item_text is None:
            raise DataError("filter.require_metadata is true but the source has no item metadata file")
        keep = item_text["raw_item_id"]
    try:
        seq = build_sequences(inter, fp.k, keep_items=keep)
    except DataError as exc:  # nothing survived the filter: name the file it read
        raise DataError(f"{report.interactions_file}: {exc}") from None
    splits = leave_one_out(seq.interactions, fp.max_history)
    items = seq.items
    n_without_text = items.height
    if item_text is not None:
        items = items.join(item_text, on="raw_item_id", how="left")
        text_cols = [c for c in item_text.columns if c != "raw_item_id"]
        items = items.with_columns(pl.col(c).fill_null("") for c in text_cols)
        n_without_text = items.filter(pl.all_horizontal(pl.col(c) == "" for c in text_cols)).height if text_cols \
            else items.height
    items = items.sort("item_id")
    stats = {
        "dataset": params.data.dataset_name,
        **sequence_stats(seq),
        "interactions_read": inter.height,
        "items_without_text": n_without_text,
        "malformed_lines_skipped": sum(report.bad_lines.values()),
        "literal_lines_parsed": report.literal_fallbacks,
        "timestamps_converted": report.timestamps_converted,
        "train_samples": splits["train"].num_rows,
        "valid_samples": splits["valid"].num_rows,
        "test_samples": splits["test"].num_rows,
        "k": fp.k,
        "max_history": fp.max_history,
    }
    log(f"{fp.k}-core after {seq.kcore_rounds} rounds: {stats['users']:,} users, {stats['items']:,} items, "
        f"{stats['interactions']:,} interactions (mean length {stats['mean_length']:.2f})")
    if n_without_text:
        log(f"warning: {n_without_text:,} of {items.height:,} items have no text; the embed stage will see empty text")
        # what the embed stage's refusal shows: whether the two files use the same kind of ids
        stats["item_ids_sample"] = items["raw_item_id"].head(5).to_list()
        stats["metadata_ids_sample"] = [] if item_text is None else item_text["raw_item_id"].head(5).to_list()
    with atomic_dir(out_dir) as tmp:
        write_parquet(items, tmp / "items.parquet")
        write_parquet(seq.users.sort("user_id"), tmp / "users.parquet")
        write_parquet(seq.interactions, tmp / "interactions.parquet")
        for name, table in splits.items():
            write_parquet(table, tmp / f"{name}.parquet")
        write_json(stats, tmp / "stats.json")
    # What was skipped or repaired, printed last so that it is what a user sees when the stage ends.
    for line in report.summary(shown):
        log(f"note: {line}")
    return stats
