"""What the Amazon releases share (docs/data_sources.md): one interactions file and one ``meta_`` file of
item text, JSON lines (or the Python literals of the old metadata files)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import polars as pl

from pipeline.data.readers import (
    DataError,
    ReadReport,
    harmonise_time_units,
    read_amazon_meta,
    read_interactions,
    read_item_text,
    read_review_jsonl,
)
from pipeline.data.sources.base import Read, RemoteSource, label


class AmazonRelease(RemoteSource):
    """A release's reader: ``read_csv`` for its ratings CSV, review JSON lines otherwise."""

    def read_csv(self, path: Path, max_bad: int, report: ReadReport) -> pl.DataFrame:
        raise DataError(f"{path}: {self.name} has no CSV interactions file")

    def read(self, raw_dir: Path, files: Iterable[str], *, max_bad: int, shown: dict[str, str]) -> Read:
        report = ReadReport()
        files = set(files)
        meta = [f for f in files if f.startswith("meta_")]
        inter_files = [f for f in files if not f.startswith("meta_")]
        if len(inter_files) != 1:
            raise DataError(f"{raw_dir}: expected one interactions file for {self.name}, found {sorted(inter_files)}")
        path = raw_dir / inter_files[0]
        if ".csv" in path.suffixes:
            inter = read_interactions(path, label(shown, path), report, lambda: self.read_csv(path, max_bad, report))
        else:
            inter = read_interactions(path, label(shown, path), report,
                                      lambda: read_review_jsonl(path, max_bad, report))
        items = None
        if meta:
            meta_path = raw_dir / meta[0]
            items = read_item_text(meta_path, label(shown, meta_path), report,
                                   lambda: read_amazon_meta(meta_path, max_bad, report))
        return harmonise_time_units(inter, label(shown, path), report), items, report
