"""Getting files into data/raw: streaming a remote file from its mirrors, copying a local one, pruning.

Downloads stream to ``<name>.part`` with a progress bar and resume from its size with an HTTP range
request, so an interrupted download continues where it stopped (the stage's output is declared
``persist`` in dvc.yaml for that reason). Retrying is the orchestrator's job (Prefect task retries); a
failure that retrying cannot fix (no network at all) is raised as :class:`NetworkUnavailable` so that it
fails at once. The sources (pipeline/data/sources/) say which files they need; this module only moves them.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import requests
from tqdm.auto import tqdm

from pipeline.errors import UserError
from pipeline.io import atomic_path

MANIFEST = "manifest.json"


class DownloadError(UserError, RuntimeError):
    """A file could not be obtained; the message says which and what to do."""


class NetworkUnavailable(DownloadError):
    """No mirror could even be connected to: retrying will not help."""


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name under data/raw
    paths: tuple[str, ...]  # paths under each mirror root, tried in order
    required: bool = True


def supply_hint(name: str, urls: list[str], raw_dir: Path) -> str:
    return (
        f"To supply it yourself: download {urls[0] if urls else name} on a machine with access, put it at "
        f"{raw_dir / name}, and run the stage again (a file already there is used as it is); or switch "
        f"to your own files with data.source: local (docs/data.md, 'Your own data')."
    )


def fetch_url(url: str, dest: Path, timeout: float, chunk: int = 1 << 20) -> None:
    """Stream ``url`` to ``dest``, resuming from ``dest.part`` if an earlier attempt left one."""
    part = dest.with_name(dest.name + ".part")
    done = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={done}-"} if done else {}
    with requests.get(url, stream=True, timeout=timeout, headers=headers) as r:
        if r.status_code == 416:  # nothing left to fetch: the part file is complete
            part.replace(dest)
            return
        r.raise_for_status()
        if done and r.status_code != 206:  # server ignored the range: start over
            done = 0
        total = int(r.headers.get("Content-Length", 0)) + done or None
        with open(part, "ab" if done else "wb") as f, tqdm(
            total=total, initial=done, unit="B", unit_scale=True, desc=dest.name
        ) as bar:
            for block in r.iter_content(chunk):
                f.write(block)
                bar.update(len(block))
    part.replace(dest)


def fetch_from_mirrors(rf: RemoteFile, mirrors: list[str], raw_dir: Path, timeout: float) -> str:
    """Try every mirror for ``rf``; return the URL that worked."""
    dest = raw_dir / rf.name
    urls = [f"{m.rstrip('/')}/{p}" for m in mirrors for p in rf.paths]
    failures: list[str] = []
    connected = False
    for url in urls:
        try:
            fetch_url(url, dest, timeout)
            return url
        except (requests.ConnectionError, requests.Timeout) as exc:
            failures.append(f"{url}: cannot connect ({type(exc).__name__})")
        except requests.HTTPError as exc:
            connected = True
            failures.append(f"{url}: HTTP {exc.response.status_code}")
    kind = DownloadError if connected else NetworkUnavailable
    raise kind(
        f"could not download {rf.name}; tried:\n  " + "\n  ".join(failures) + "\n"
        + supply_hint(rf.name, urls, raw_dir)
    )


def copy_into(raw_dir: Path, files: list[tuple[str, Path]]) -> dict[str, dict]:
    """Copy (name under data/raw, source path) pairs into ``raw_dir``, each atomically; manifest entries."""
    entries = {}
    for name, src in files:
        with atomic_path(raw_dir / name) as tmp:
            shutil.copyfile(src, tmp)
        entries[name] = {"origin": str(src)}
    return entries


def prune(raw_dir: Path, keep: set[str]) -> None:
    """Remove files of a previously selected source (data/raw persists across runs for resuming)."""
    for f in raw_dir.iterdir():
        base = f.name[: -len(".part")] if f.name.endswith(".part") else f.name
        if base not in keep and f.name != MANIFEST and f.is_file():
            f.unlink()
