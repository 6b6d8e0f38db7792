"""Parse raw files into two frames: interactions (user, item, timestamp in file order) and item text.

Field spellings found in the wild are accepted (datasets.md): the item id is ``parent_asin`` when
present (Amazon 2023 keys its metadata by it), else ``asin``; the user is ``user_id`` or
``reviewerID``; the time is ``timestamp`` (ms, 2023), ``sortTimestamp`` or ``unixReviewTime`` (s).
Only the order of timestamps within a user matters downstream, so units are kept as they are.

Bad input policy (architecture.md, "Errors"):
- a malformed line (not JSON, wrong number of CSV fields) is skipped and counted; more than
  ``max_bad_lines`` stops with the file and the first bad line;
- a missing required field, or a timestamp that is not a number, stops at once naming file and line.
"""
from __future__ import annotations

import ast
import csv
import gzip
import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import orjson
import polars as pl

USER_KEYS = ("user_id", "reviewerID", "user")
ITEM_KEYS = ("parent_asin", "asin", "item_id", "item")
TIME_KEYS = ("timestamp", "sortTimestamp", "unixReviewTime", "time")

# Item text fields and their spellings across releases; list values are joined with ", " as DECOR's
# framework does (datasets.md, "Item text as DECOR's framework builds it").
TEXT_FIELDS = {
    "title": ("title",),
    "brand": ("brand", "store"),
    "categories": ("categories", "category"),
    "features": ("features", "feature"),
    "description": ("description",),
    "main_category": ("main_category",),
}


class DataError(ValueError):
    """Raw input the stage refuses; the message names the file, the line and what to fix."""


@dataclass
class ReadReport:
    """What parsing saw, for the stats file."""
    bad_lines: dict[str, int] = field(default_factory=dict)
    literal_fallbacks: int = 0
    lines_read: int = 0


class BadLines:
    """Counts malformed lines of one file and stops past the threshold."""

    def __init__(self, path: Path, limit: int, report: ReadReport):
        self.path, self.limit, self.report = path, limit, report
        self.count, self.first = 0, None

    def add(self, line_no: int, reason: str) -> None:
        self.count += 1
        self.report.bad_lines[self.path.name] = self.count
        if self.first is None:
            self.first = (line_no, reason)
        if self.count > self.limit:
            n, why = self.first
            raise DataError(
                f"{self.path}: {self.count} malformed lines, more than filter.max_bad_lines={self.limit}; "
                f"the first is line {n}: {why}. Fix or re-download the file, or raise filter.max_bad_lines."
            )


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _pick(rec: dict, keys: Iterable[str]):
    for k in keys:
        v = rec.get(k)
        if v is not None and v != "":
            return v
    return None


def parse_timestamp(value, path: Path, line_no: int) -> int:
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        return int(value)
    try:
        return int(float(str(value).strip()))
    except (TypeError, ValueError):
        raise DataError(
            f"{path}:{line_no}: timestamp {value!r} is not a number; timestamps must be Unix times "
            f"(seconds or milliseconds). Convert the column, or drop that line."
        ) from None


def _json_lines(path: Path, bad: BadLines, report: ReadReport) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record); JSON first, then a Python-literal parser (old Amazon metadata)."""
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            report.lines_read += 1
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                try:
                    rec = ast.literal_eval(line.strip())
                    report.literal_fallbacks += 1
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    bad.add(line_no, "not JSON")
                    continue
            if not isinstance(rec, dict):
                bad.add(line_no, "not a JSON object")
                continue
            yield line_no, rec


def _missing(path: Path, line_no: int, what: str, keys: tuple[str, ...]) -> DataError:
    return DataError(f"{path}:{line_no}: missing {what} field (accepted names: {', '.join(keys)}); "
                     f"every interaction needs a user, an item and a timestamp.")


def read_review_jsonl(path: Path, max_bad: int, report: ReadReport) -> pl.DataFrame:
    bad = BadLines(path, max_bad, report)
    users, items, times = [], [], []
    for line_no, rec in _json_lines(path, bad, report):
        u, i, t = _pick(rec, USER_KEYS), _pick(rec, ITEM_KEYS), _pick(rec, TIME_KEYS)
        if u is None:
            raise _missing(path, line_no, "user", USER_KEYS)
        if i is None:
            raise _missing(path, line_no, "item", ITEM_KEYS)
        if t is None:
            raise _missing(path, line_no, "timestamp", TIME_KEYS)
        users.append(str(u))
        items.append(str(i))
        times.append(parse_timestamp(t, path, line_no))
    return pl.DataFrame({"user": users, "item": items, "timestamp": times},
                        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})


def _first_bad_timestamp(df: pl.DataFrame, col: str) -> int | None:
    as_num = df[col].str.strip_chars().cast(pl.Float64, strict=False)
    bad = as_num.is_null() & df[col].is_not_null()
    idx = bad.arg_true()
    return int(idx[0]) if len(idx) else None


def read_delimited(path: Path, columns: dict[str, str], max_bad: int, report: ReadReport, *,
                   separator: str = ",", header: bool | None = None, names: list[str] | None = None,
                   encoding: str = "utf8") -> pl.DataFrame:
    """Read user/item/timestamp from a delimited file.

    ``columns`` maps our names (user, item, timestamp) to the file's column names. ``header=None``
    detects a header row (accepting files without one, as old copies of the Amazon CSVs are).
    A fast polars read handles clean files; any irregularity switches to a line-by-line reader that
    applies the bad-line policy with exact line numbers.
    """
    with open_text(path) as f:
        first = f.readline().rstrip("\n\r")
    # RecBole's atomic files type their header fields ("user_id:token"); the name is before the colon.
    first_names = [c.strip().strip('"').split(":")[0] for c in first.split(separator)]
    if header is None:
        header = any(c in first_names for c in columns.values()) or names is None
    file_names = first_names if header else names
    if file_names is None:
        raise DataError(f"{path}: no header row and no column names known for this file")
    for ours, theirs in columns.items():
        if theirs not in file_names:
            raise DataError(f"{path}:1: missing {ours} column {theirs!r}; the columns are {file_names}. "
                            f"Set the data.local.*_column parameters to the file's names.")
    wanted = [columns["user"], columns["item"], columns["timestamp"]]
    offset = 2 if header else 1  # line number of the first data row
    df = None
    try:
        df = pl.read_csv(path, separator=separator, has_header=False, skip_rows=1 if header else 0,
                         new_columns=file_names, infer_schema=False, quote_char='"', encoding=encoding)
        df = df.select(wanted)
        if df.null_count().sum_horizontal().item() or df.width != 3:
            df = None  # ragged or empty fields: let the careful reader classify them
    except (pl.exceptions.ComputeError, pl.exceptions.ShapeError, pl.exceptions.NoDataError):
        df = None
    if df is not None:
        report.lines_read += df.height
        bad_at = _first_bad_timestamp(df, columns["timestamp"])
        if bad_at is not None:
            parse_timestamp(df[columns["timestamp"]][bad_at], path, bad_at + offset)
        return df.select(
            pl.col(columns["user"]).alias("user"),
            pl.col(columns["item"]).alias("item"),
            pl.col(columns["timestamp"]).str.strip_chars().cast(pl.Float64).cast(pl.Int64).alias("timestamp"),
        )
    return _read_delimited_slow(path, file_names, columns, max_bad, report, separator, header, encoding)


def _read_delimited_slow(path, file_names, columns, max_bad, report, separator, header, encoding):
    bad = BadLines(path, max_bad, report)
    idx = {k: file_names.index(v) for k, v in columns.items()}
    users, items, times = [], [], []
    opener = (lambda: io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, errors="replace")) \
        if path.suffix == ".gz" else (lambda: open(path, encoding=encoding, errors="replace", newline=""))
    with opener() as f:
        reader = csv.reader(f, delimiter=separator)
        for row in reader:
            line_no = reader.line_num
            if header and line_no == 1:
                continue
            if not row:
                continue
            report.lines_read += 1
            if len(row) != len(file_names):
                bad.add(line_no, f"{len(row)} fields, expected {len(file_names)}")
                continue
            u, i, t = row[idx["user"]], row[idx["item"]], row[idx["timestamp"]]
            for what, v in (("user", u), ("item", i), ("timestamp", t)):
                if v.strip() == "":
                    raise DataError(f"{path}:{line_no}: empty {what} field ({columns[what]!r}); "
                                    f"every interaction needs a user, an item and a timestamp.")
            users.append(u)
            items.append(i)
            times.append(parse_timestamp(t, path, line_no))
    return pl.DataFrame({"user": users, "item": items, "timestamp": times},
                        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        parts = [_text(v) for v in value]
        return ", ".join(p for p in parts if p)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_text(v)}" for k, v in value.items())
    return str(value).strip()


def _items_frame(rows: list[dict], fields: Iterable[str]) -> pl.DataFrame:
    fields = list(fields)
    data = {"raw_item_id": [r["raw_item_id"] for r in rows]}
    for f in fields:
        data[f] = [r.get(f, "") for r in rows]
    return pl.DataFrame(data, schema={c: pl.String for c in data}).unique("raw_item_id", keep="first",
                                                                          maintain_order=True)


def read_amazon_meta(path: Path, max_bad: int, report: ReadReport) -> pl.DataFrame:
    bad = BadLines(path, max_bad, report)
    rows = []
    for line_no, rec in _json_lines(path, bad, report):
        item = _pick(rec, ("parent_asin", "asin"))
        if item is None:
            raise _missing(path, line_no, "item", ("parent_asin", "asin"))
        row = {"raw_item_id": str(item)}
        for name, keys in TEXT_FIELDS.items():
            row[name] = _text(_pick(rec, keys))
        rows.append(row)
    return _items_frame(rows, TEXT_FIELDS)


def read_sequences_json(path: Path) -> pl.DataFrame:
    """LC-Rec/LETTER layout: {user: [item, ...]} in chronological order; the position is the time."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected {{user: [item, ...]}}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{user: [item, ...]}}, got {type(data).__name__}")
    users, items, times = [], [], []
    for u, seq in data.items():
        if not isinstance(seq, list):
            raise DataError(f"{path}: user {u!r}: expected a list of items, got {type(seq).__name__}")
        users.extend([str(u)] * len(seq))
        items.extend(str(i) for i in seq)
        times.extend(range(len(seq)))
    return pl.DataFrame({"user": users, "item": items, "timestamp": times},
                        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})


def read_items_json(path: Path) -> pl.DataFrame:
    """{item: {field: text or list}}; every field becomes a text column."""
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected {{item: {{title: ..., ...}}}}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object {{item: {{field: text}}}}")
    fields: dict[str, None] = {}
    rows = []
    for item, rec in data.items():
        if not isinstance(rec, dict):
            raise DataError(f"{path}: item {item!r}: expected an object of text fields")
        row = {"raw_item_id": str(item)}
        for k, v in rec.items():
            fields.setdefault(k, None)
            row[k] = _text(v)
        rows.append(row)
    return _items_frame(rows, fields)


def read_table(path: Path, columns: dict[str, str], max_bad: int, report: ReadReport) -> pl.DataFrame:
    """A local interactions table: CSV, TSV, Parquet or JSONL, by extension."""
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext == ".parquet":
        df = pl.read_parquet(path)
        for ours, theirs in columns.items():
            if theirs not in df.columns:
                raise DataError(f"{path}: missing {ours} column {theirs!r}; the columns are {df.columns}")
        df = df.select(pl.col(columns["user"]).cast(pl.String).alias("user"),
                       pl.col(columns["item"]).cast(pl.String).alias("item"),
                       pl.col(columns["timestamp"]).alias("timestamp"))
        if not df["timestamp"].dtype.is_numeric():
            bad_at = _first_bad_timestamp(df.with_columns(pl.col("timestamp").cast(pl.String)), "timestamp")
            if bad_at is not None:
                parse_timestamp(df["timestamp"][bad_at], path, bad_at + 1)
        return df.with_columns(pl.col("timestamp").cast(pl.String).str.strip_chars()
                               .cast(pl.Float64).cast(pl.Int64))
    if ext in (".jsonl", ".ndjson", ".json"):
        bad = BadLines(path, max_bad, report)
        users, items, times = [], [], []
        for line_no, rec in _json_lines(path, bad, report):
            vals = {k: rec.get(v) for k, v in columns.items()}
            for what, v in vals.items():
                if v is None or v == "":
                    raise DataError(f"{path}:{line_no}: missing {what} field {columns[what]!r}")
            users.append(str(vals["user"]))
            items.append(str(vals["item"]))
            times.append(parse_timestamp(vals["timestamp"], path, line_no))
        return pl.DataFrame({"user": users, "item": items, "timestamp": times},
                            schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})
    if ext in (".csv", ".tsv", ".txt", ".inter"):
        sep = "," if ext == ".csv" else "\t"
        return read_delimited(path, columns, max_bad, report, separator=sep, header=True)
    raise DataError(f"{path}: unknown file type {ext!r}; use .csv, .tsv, .parquet or .jsonl")


def read_items_table(path: Path, item_column: str) -> pl.DataFrame:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext == ".json":
        return read_items_json(path)
    if ext == ".parquet":
        df = pl.read_parquet(path)
    elif ext in (".jsonl", ".ndjson"):
        df = pl.read_ndjson(path, infer_schema_length=None)
    elif ext in (".csv", ".tsv"):
        df = pl.read_csv(path, separator="," if ext == ".csv" else "\t", infer_schema=False)
    else:
        raise DataError(f"{path}: unknown items file type {ext!r}; use .json, .jsonl, .csv, .tsv or .parquet")
    if item_column not in df.columns:
        raise DataError(f"{path}: missing item column {item_column!r}; the columns are {df.columns}")
    text_cols = [c for c in df.columns if c != item_column]
    return df.select(
        pl.col(item_column).cast(pl.String).alias("raw_item_id"),
        *[(pl.col(c).list.join(", ") if isinstance(df[c].dtype, pl.List) else pl.col(c).cast(pl.String))
          .fill_null("").alias(c) for c in text_cols],
    ).unique("raw_item_id", keep="first", maintain_order=True)


# ----- MovieLens-100K: the GroupLens archive or RecBole's atomic files ---------------------------------

ML_GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
             "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
             "Thriller", "War", "Western"]


def read_movielens_zip(path: Path, max_bad: int, report: ReadReport) -> tuple[pl.DataFrame, pl.DataFrame]:
    with zipfile.ZipFile(path) as z, z.open("ml-100k/u.data") as f:
        inter_bytes = f.read()
        item_bytes = z.read("ml-100k/u.item")
    tmp = path.with_name(".u.data.tmp")
    tmp.write_bytes(inter_bytes)
    try:
        inter = read_delimited(tmp, {"user": "user", "item": "item", "timestamp": "timestamp"}, max_bad, report,
                               separator="\t", header=False, names=["user", "item", "rating", "timestamp"])
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
    return inter, _items_frame(rows, ("title", "year", "genres"))


def read_recbole_movielens(raw_dir: Path, max_bad: int, report: ReadReport) -> tuple[pl.DataFrame, pl.DataFrame]:
    inter = read_delimited(raw_dir / "ml-100k.inter", {"user": "user_id", "item": "item_id", "timestamp": "timestamp"},
                           max_bad, report, separator="\t", header=True)
    items = pl.read_csv(raw_dir / "ml-100k.item", separator="\t", infer_schema=False, quote_char=None)
    items = items.rename({c: c.split(":")[0] for c in items.columns})
    items = items.select(
        pl.col("item_id").alias("raw_item_id"), pl.col("movie_title").fill_null("").alias("title"),
        pl.col("release_year").fill_null("").alias("year"),
        pl.col("class").fill_null("").str.split(" ").list.join(", ").alias("genres"),
    )
    return inter, items


def read_source(source: str, raw_dir: Path, files: Iterable[str], *, max_bad: int, local=None
                ) -> tuple[pl.DataFrame, pl.DataFrame | None, ReadReport]:
    """Dispatch on the source; returns (interactions in file order, item text or None, report)."""
    report = ReadReport()
    files = set(files)
    if source == "movielens-100k":
        if "ml-100k.zip" in files:
            inter, items = read_movielens_zip(raw_dir / "ml-100k.zip", max_bad, report)
        else:
            inter, items = read_recbole_movielens(raw_dir, max_bad, report)
        return inter, items, report
    if source == "local":
        if local.format == "sequences":
            inter = read_sequences_json(raw_dir / f"{local.name}.inter.json")
            item_file = raw_dir / f"{local.name}.item.json"
            items = read_items_json(item_file) if item_file.exists() else None
        else:
            cols = {"user": local.user_column, "item": local.item_column, "timestamp": local.time_column}
            inter = read_table(raw_dir / Path(local.interactions).name, cols, max_bad, report)
            items = read_items_table(raw_dir / Path(local.items).name, local.item_column) if local.items else None
        return inter, items, report
    meta = [f for f in files if f.startswith("meta_")]
    inter_files = [f for f in files if not f.startswith("meta_")]
    if len(inter_files) != 1:
        raise DataError(f"{raw_dir}: expected one interactions file for {source}, found {sorted(inter_files)}")
    inter_path = raw_dir / inter_files[0]
    if ".csv" in inter_path.suffixes:
        if source == "amazon2018":  # ratings CSV: no header; item, user, rating, timestamp (datasets.md)
            inter = read_delimited(inter_path, {"user": "user", "item": "item", "timestamp": "timestamp"}, max_bad,
                                   report, header=False, names=["item", "user", "rating", "timestamp"])
        else:  # Amazon 2023 benchmark CSV: user_id,parent_asin,rating,timestamp, header optional
            inter = read_delimited(inter_path, {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp"},
                                   max_bad, report, names=["user_id", "parent_asin", "rating", "timestamp"])
    else:
        inter = read_review_jsonl(inter_path, max_bad, report)
    items = read_amazon_meta(raw_dir / meta[0], max_bad, report) if meta else None
    return inter, items, report
