"""Atomic, deterministic artifact writing.

A stage writes every output under a temporary name and renames it into place, so an interrupted
stage never leaves a half-written file that DVC could mistake for a result.
Tables are sorted by the caller and written with fixed settings so identical inputs give identical
bytes, which lets DVC skip downstream stages.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, else delete it."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory output: build it aside, then swap it in."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_parquet(table, dest: str | Path) -> None:
    """Write a pyarrow Table or polars DataFrame atomically, with settings fixed for byte-identical output."""
    if not isinstance(table, pa.Table):  # polars DataFrame; not imported here so the training path needs no polars
        table = table.to_arrow()
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=True, write_statistics=True)


def write_json(obj, dest: str | Path) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_curve(rows: list[dict], dest: str | Path) -> None:
    """A per-epoch curve as CSV (`dvc plots`): ``epoch`` first, then every other column in name order. The
    order is fixed rather than taken from the rows, because a resumed training's earlier rows come back from
    its checkpoint's JSON with their keys sorted: the same run must write the same bytes however often it was
    interrupted."""
    columns = {k for row in rows for k in row}
    fieldnames = (["epoch"] if "epoch" in columns else []) + sorted(columns - {"epoch"})
    with atomic_path(dest) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def _json_default(o):
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
