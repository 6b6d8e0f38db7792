"""The interface every dataset source implements (docs/adding_a_dataset.md).

A source is built from the ``data:`` block of params.yaml. The download stage asks it to ``bring`` its
files into data/raw; the filter stage asks it to ``read`` them (after ``check_raw``) into interactions in
file order, item text (or None) and a ReadReport. A remote source only lists its files and mirrors
(``RemoteSource``); the fetching, resuming and the manifest are the download stage's.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import polars as pl

from pipeline.config import DataParams
from pipeline.data.raw_files import RemoteFile, prune
from pipeline.data.readers import ReadReport

# (RemoteFile, mirrors, raw_dir, timeout) -> origin: fetch_from_mirrors, or the orchestrator's retrying task.
Fetch = Callable[[RemoteFile, list[str], Path, float], str]
Read = tuple[pl.DataFrame, pl.DataFrame | None, ReadReport]


class Source:
    """One ``data.source``; subclasses set ``name`` and implement ``bring`` and ``read``."""
    name: str
    # Whether ``bring`` checks its files before it copies them (embedded, local): the download stage then
    # does not decode them again; a fetched file is checked after it arrives (``download._check_fetched``).
    checked_on_copy: bool = False

    def __init__(self, p: DataParams):
        self.p = p

    def bring(self, raw_dir: Path, fetch: Fetch) -> dict[str, dict]:
        """Put the source's files into ``raw_dir``; returns {file name: {"origin": where it came from}}
        ("already present" for a file that was there), and removes other sources' files (``prune``)."""
        raise NotImplementedError

    def shown_names(self, files: dict[str, dict]) -> dict[str, str]:
        """File name under data/raw -> the name errors give it (the manifest's ``files``); default: none."""
        return {}

    def check_raw(self, raw_dir: Path) -> None:
        """Refuse raw files the filter stage must not read (the embedded copy is checked again)."""

    def read(self, raw_dir: Path, files: Iterable[str], *, max_bad: int, shown: dict[str, str]) -> Read:
        """(interactions in file order, item text or None, report); every failure is a DataError naming
        the file as ``shown`` gives it."""
        raise NotImplementedError


class RemoteSource(Source):
    """A source downloaded from mirrors: ``files`` and ``default_mirrors`` are all it must give."""
    default_mirrors: tuple[str, ...] = ()

    def files(self) -> list[RemoteFile]:
        raise NotImplementedError

    @property
    def mirrors(self) -> list[str]:
        """data.mirrors.<source> where set (docs/data.md, "The papers' datasets"), else the defaults."""
        return list(self.p.mirrors.get(self.name) or self.default_mirrors)

    def bring(self, raw_dir: Path, fetch: Fetch) -> dict[str, dict]:
        files = self.files()
        prune(raw_dir, {f.name for f in files})
        entries: dict[str, dict] = {}
        for rf in files:
            if (raw_dir / rf.name).exists():
                entries[rf.name] = {"origin": "already present"}
                continue
            entries[rf.name] = {"origin": fetch(rf, self.mirrors, raw_dir, self.p.timeout_s)}
        return entries


def label(shown: dict[str, str], path: Path) -> str:
    """The name errors give ``path``: its entry in ``shown``, else the path under data/raw."""
    return shown.get(path.name, str(path))
