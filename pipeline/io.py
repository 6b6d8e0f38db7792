"""Atomic, deterministic artifact writing.

A stage writes every output under a temporary name and renames it into place, so an interrupted
stage never leaves a half-written file that DVC could mistake for a result.
Tables are sorted by the caller and written with fixed settings so identical inputs give identical
bytes, which lets DVC skip downstream stages.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import glob
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import UserError


class WriteError(UserError, OSError):
    """An output that could not be written: a full disk, a folder without write permission, a read-only mount."""

    def __str__(self) -> str:
        return self.strerror


# The write failures a user repairs on the machine (not in params.yaml or the input files).
_WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
                 errno.EACCES: "no permission to write there", errno.EPERM: "no permission to write there",
                 errno.EROFS: "the file system is read-only"}


def write_failure(exc: OSError, dest: Path) -> WriteError | None:
    """A user error for ``exc`` met while writing ``dest``, naming the file, the cause and the free space; None
    for other OS errors. pyarrow raises plain OSErrors without an errno: their "[Errno 28]" text counts."""
    code = exc.errno or next((c for c in _WRITE_ERRNOS if f"[Errno {c}]" in str(exc)), None)
    if code not in _WRITE_ERRNOS:
        return None
    if code not in (errno.ENOSPC, errno.EDQUOT) and exc.filename is not None:
        failed, out = Path(exc.filename).resolve(), dest.resolve()
        if not (failed in (out, out.parent) or failed.parent == out.parent or out in failed.parents):
            return None  # a file it could not read or write elsewhere: not this output's failure
    where = next((p for p in (dest.parent, *dest.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(where).free
    return WriteError(code, f"{dest}: cannot write it: {_WRITE_ERRNOS[code]} ({free / 2**20:,.0f} MiB free on the "
                            f"file system of {where.resolve()}). Nothing partial was left: outputs are written under a "
                            "temporary name and renamed. Free space or fix the folder's permissions, then re-run "
                            "`dvc repro` (finished stages are not run again)")


@contextlib.contextmanager
def _writing(dest: Path) -> Iterator[None]:
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        failure = write_failure(exc, dest)
        if failure is None:
            raise
        raise failure from None


def remove_stale_temporaries(dest: Path) -> None:
    """Delete the temporary files or folders of ``dest`` that a killed writer left (SIGKILL, a power cut: no
    ``finally`` ran). Inside a persisted output (a model folder) they would change the output's hash, so a
    resumed training would not reproduce an uninterrupted one; elsewhere they would only take disk space."""
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success rename it to ``dest``, else delete it. A full disk or
    a folder that cannot be written is a :class:`WriteError` naming ``dest``."""
    dest = Path(dest)
    with _writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _writing(dest):
            yield tmp_path
            os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(dest: str | Path) -> Iterator[Path]:
    """Like :func:`atomic_path` for a directory output: build it aside, then swap it in."""
    dest = Path(dest)
    with _writing(dest):
        dest.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(dest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        with _writing(dest):
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
