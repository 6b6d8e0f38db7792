"""``data.source: amazon-scientific``: the dataset shipped in the repository (pipeline/data/embedded.py,
data/embedded/amazon-scientific/SOURCE.md), in the sequences format, checked byte for byte at both stages."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pipeline.data import embedded
from pipeline.data.raw_files import copy_into, prune
from pipeline.data.readers import ReadReport, read_interactions, read_item_text, read_items_json, read_sequences_json
from pipeline.data.sources.base import Fetch, Read, Source, label


class AmazonScientific(Source):
    name = embedded.SOURCE
    checked_on_copy = True

    def bring(self, raw_dir: Path, fetch: Fetch) -> dict[str, dict]:
        """Copy the shipped files once both match their SHA-256."""
        embedded.verify(embedded.DIR)
        entries = copy_into(raw_dir, [(name, embedded.DIR / name) for name in embedded.SHA256])
        prune(raw_dir, set(entries))
        return entries

    def check_raw(self, raw_dir: Path) -> None:
        embedded.verify(raw_dir)  # the copy of the shipped files, checked again before it is read

    def read(self, raw_dir: Path, files: Iterable[str], *, max_bad: int, shown: dict[str, str]) -> Read:
        report = ReadReport()
        path = raw_dir / f"{embedded.NAME}.inter.json"
        inter = read_interactions(path, label(shown, path), report, lambda: read_sequences_json(path))
        item_file = raw_dir / f"{embedded.NAME}.item.json"
        return inter, read_item_text(item_file, label(shown, item_file), report,
                                     lambda: read_items_json(item_file)), report
