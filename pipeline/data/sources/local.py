"""``data.source: local``: the user's own files (docs/data.md, "Your own data"), in the sequences format
(LC-Rec/LETTER: <name>.inter.json and <name>.item.json) or as tables (CSV/TSV/Parquet/JSONL)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pipeline.data.raw_files import DownloadError, copy_into, prune
from pipeline.data.readers import (
    ReadReport,
    check_complete,
    harmonise_time_units,
    read_interactions,
    read_item_text,
    read_items_json,
    read_items_table,
    read_sequences_json,
    read_table,
)
from pipeline.data.sources.base import Fetch, Read, Source, label


class LocalFiles(Source):
    name = "local"
    checked_on_copy = True

    def wanted(self) -> list[tuple[str, Path, bool]]:
        """(name under data/raw, the user's path, required) for each file data.local names."""
        loc = self.p.local
        base = Path(loc.dir)
        if loc.format == "sequences":
            if not loc.name:
                raise DownloadError("data.local.name is empty: set it to <name> for <name>.inter.json / "
                                    "<name>.item.json")
            return [(f"{loc.name}.inter.json", base / f"{loc.name}.inter.json", True),
                    (f"{loc.name}.item.json", base / f"{loc.name}.item.json", False)]
        if not loc.interactions:
            raise DownloadError("data.local.interactions is empty: name your interactions file "
                                "(CSV/TSV/Parquet/JSONL)")
        out = [(Path(loc.interactions).name, base / loc.interactions, True)]
        if loc.items:
            out.append((Path(loc.items).name, base / loc.items, True))
        return out

    def bring(self, raw_dir: Path, fetch: Fetch) -> dict[str, dict]:
        """Copy the user's files once all of them are found and complete (a refused run leaves ``raw_dir``
        as it was)."""
        files = []
        for name, src, required in self.wanted():
            if not src.exists():
                if required:
                    raise DownloadError(f"{src}: not found (data.local.dir = {self.p.local.dir!r}); "
                                        f"put the file there or fix data.local in params.yaml")
                continue
            check_complete(src)
            files.append((name, src))
        entries = copy_into(raw_dir, files)
        prune(raw_dir, set(entries))
        return entries

    def shown_names(self, files: dict[str, dict]) -> dict[str, str]:
        """Errors and the summary name the user's own file (its origin), not its copy in data/raw."""
        return {name: entry["origin"] for name, entry in files.items()}

    def read(self, raw_dir: Path, files: Iterable[str], *, max_bad: int, shown: dict[str, str]) -> Read:
        report = ReadReport()
        local = self.p.local
        if local.format == "sequences":
            path = raw_dir / f"{local.name}.inter.json"
            # positions, not times: no units to harmonise
            inter = read_interactions(path, label(shown, path), report, lambda: read_sequences_json(path))
            item_file = raw_dir / f"{local.name}.item.json"
            items = read_item_text(item_file, label(shown, item_file), report,
                                   lambda: read_items_json(item_file)) if item_file.exists() else None
            return inter, items, report
        cols = {"user": local.user_column, "item": local.item_column, "timestamp": local.time_column}
        path = raw_dir / Path(local.interactions).name
        inter = read_interactions(path, label(shown, path), report, lambda: read_table(path, cols, max_bad, report))
        items = None
        if local.items:
            item_file = raw_dir / Path(local.items).name
            items = read_item_text(item_file, label(shown, item_file), report,
                                   lambda: read_items_table(item_file, local.item_column))
        return harmonise_time_units(inter, label(shown, path), report), items, report
