"""The `download` stage's logic: the selected source brings its files onto disk; this writes the manifest.

Which files a source needs and how they arrive is the source's (pipeline/data/sources/, one module per
``data.source``); streaming, resuming and mirror fallback are pipeline/data/raw_files.py's. Every file lands
in a manifest with its origin, size and SHA-256.
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.config import DataParams
from pipeline.data.raw_files import (  # noqa: F401  (the download stage's names, used by the orchestrator)
    MANIFEST,
    DownloadError,
    NetworkUnavailable,
    RemoteFile,
    fetch_from_mirrors,
    fetch_url,
)
from pipeline.data.readers import DataError, check_complete
from pipeline.data.sources.registry import source_for
from pipeline.io import sha256_file, write_json


def download(p: DataParams, raw_dir: str | Path, fetch=None) -> dict:
    """Bring the source's files into ``raw_dir`` and write the manifest; returns it.

    ``fetch`` (RemoteFile, mirrors, raw_dir, timeout) -> origin lets the orchestrator wrap each remote
    file in a retrying task; it defaults to :func:`fetch_from_mirrors`.
    """
    raw_dir = Path(raw_dir)
    raw_dir.mkdir(parents=True, exist_ok=True)
    source = source_for(p)
    entries = source.bring(raw_dir, fetch or fetch_from_mirrors)
    old = _read_manifest(raw_dir)
    for name, e in entries.items():
        f = raw_dir / name
        e["size"] = f.stat().st_size
        prev = old.get("files", {}).get(name, {})
        if e["origin"] == "already present" and prev.get("size") == e["size"]:
            e.update(origin=prev.get("origin", e["origin"]), sha256=prev["sha256"])
        else:
            if not source.checked_on_copy:
                _check_fetched(f, e["origin"])
            e["sha256"] = sha256_file(f)
    manifest = {"source": p.source, "dataset": p.dataset_name, "files": dict(sorted(entries.items()))}
    write_json(manifest, raw_dir / MANIFEST)
    return manifest


def _check_fetched(path: Path, origin: str) -> None:
    """A downloaded (or user-supplied) compressed file must decode to its end before the manifest records it;
    a broken download is removed, so that the next run fetches it again."""
    try:
        check_complete(path)
    except DataError as exc:
        if origin == "already present":
            raise DataError(f"{exc}\n(This file was already in {path.parent}; replace it with a complete copy.)") \
                from None
        path.unlink()
        raise DataError(f"{exc}\n(Downloaded from {origin}; removed, so that the next run fetches it again.)") \
            from None


def _read_manifest(raw_dir: Path) -> dict:
    m = raw_dir / MANIFEST
    try:
        return json.loads(m.read_text()) if m.exists() else {}
    except ValueError:
        return {}
