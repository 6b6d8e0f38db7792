"""File formats: parse raw files into two frames, interactions (user, item, timestamp in file order) and
item text. Which files a source has and which of these readers it applies: pipeline/data/sources/.

Field spellings found in the wild are accepted (docs/data_sources.md): the item id is ``parent_asin`` when
present (Amazon 2023 keys its metadata by it), else ``asin``; the user is ``user_id`` or
``reviewerID``; the time is ``timestamp`` (ms, 2023), ``sortTimestamp`` or ``unixReviewTime`` (s).
Only the order of timestamps within a user matters downstream, so a column's unit is kept as it is;
a column that mixes Unix seconds, milliseconds and microseconds (values about x1000 apart) is converted
to its finest unit, and the stage prints how many values it converted (``harmonise_time_units``).

Bad input policy (docs/data.md, "Bad input"):
- a malformed line (not JSON, wrong number of CSV fields) is skipped and counted; more than
  ``max_bad_lines`` stops with the file and the first bad line; the stage prints the count and the first;
- a missing required field, an id that is not a string or an integer, or a timestamp that is not a number
  stops at once naming file and line;
- a file that cannot be decoded (a compressed file cut off, a damaged archive or Parquet file), an empty
  file and a file without a single interaction stop with one message naming the user's file
  (``reading``): never a traceback.
"""
from __future__ import annotations

import ast
import contextlib
import csv
import gzip
import io
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import orjson
import polars as pl
import pyarrow as pa

from pipeline.errors import UserError

USER_KEYS = ("user_id", "reviewerID", "user")
ITEM_KEYS = ("parent_asin", "asin", "item_id", "item")
TIME_KEYS = ("timestamp", "sortTimestamp", "unixReviewTime", "time")

# Item text fields and their spellings across releases; list values are joined with ", " as DECOR's
# framework does (docs/data_sources.md, "Item text").
TEXT_FIELDS = {
    "title": ("title",),
    "brand": ("brand", "store"),
    "categories": ("categories", "category"),
    "features": ("features", "feature"),
    "description": ("description",),
    "main_category": ("main_category",),
}


class DataError(UserError, ValueError):
    """Raw input the stage refuses; the message names the file, the line and what to fix."""


@dataclass
class ReadReport:
    """What parsing saw, for the stats file and the summary the stage prints at its end."""
    bad_lines: dict[str, int] = field(default_factory=dict)  # file name -> malformed lines skipped
    first_bad: dict[str, str] = field(default_factory=dict)  # file name -> "line N: why"
    literal_fallbacks: int = 0
    lines_read: int = 0
    timestamps_converted: int = 0
    interactions_file: str = ""  # the user's interactions file, as errors name it
    header_rows: int = 0  # header rows read (a file of a header alone holds no interaction)
    not_utf8: dict[str, list[int]] = field(default_factory=dict)  # file name -> [lines, first line]
    repairs: list[str] = field(default_factory=list)  # what was repaired: count and first example
    notices: list[str] = field(default_factory=list)  # what a user should know but needs no repair
    line: int = 0  # the line the current reader is at: a decoding failure mid-stream names it

    def summary(self, shown: dict[str, str]) -> list[str]:
        """One line per file with skipped lines, per repair and per notice."""
        lines = [f"skipped {n:,} malformed line(s) of {shown.get(name, name)} (first: {self.first_bad[name]})"
                 for name, n in self.bad_lines.items()]
        if self.literal_fallbacks:
            lines.append(f"read {self.literal_fallbacks:,} line(s) written as Python literals, not JSON "
                         f"(the old Amazon metadata files are)")
        for name, (n, first) in self.not_utf8.items():
            lines.append(f"{shown.get(name, name)}: {n:,} line(s) hold bytes that are not UTF-8 (first: line {first}); "
                         f"they were read with U+FFFD in their place, which merges ids that differ only there. "
                         f"Re-encode the file as UTF-8")
        return lines + self.repairs + self.notices

    def check_text(self, path: Path, line_no: int, text: str) -> None:
        """Count a line whose undecodable bytes became U+FFFD (the readers decode with errors="replace")."""
        if "\ufffd" in text:
            seen = self.not_utf8.setdefault(path.name, [0, line_no])
            seen[0] += 1


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
            self.report.first_bad[self.path.name] = f"line {line_no}: {reason}"
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


def _cut_off(exc: BaseException) -> bool:
    """Whether a decoding failure says the data ends early (an interrupted download or copy)."""
    text = str(exc).lower()
    return isinstance(exc, EOFError) or any(w in text for w in (
        "unexpected end", "ended before", "truncated", "incomplete", "must end with par1", "magic bytes not found",
        "end-of-stream"))


# What a reader meets in a file it cannot decode: gzip/zlib, zip, UTF-8, polars' CSV/NDJSON/Parquet readers
# and pyarrow's Parquet reader. Each becomes one DataError (``reading``).
DECODE_ERRORS = (EOFError, OSError, zlib.error, zipfile.BadZipFile, UnicodeDecodeError, pl.exceptions.PolarsError,
                 pa.ArrowException)


@contextlib.contextmanager
def reading(path: Path, shown: str | Path, report: ReadReport):
    """Read ``path`` (a copy under data/raw) in this block; every failure is one DataError that names
    ``shown``, the user's own file, with the line reached where there is one."""
    report.line = 0
    shown = str(shown)
    try:
        yield
        report.notices = [n.replace(str(path), shown) for n in report.notices]
    except DataError as exc:
        raise DataError(str(exc).replace(str(path), shown)) from None
    except DECODE_ERRORS as exc:
        where = f" (after line {report.line:,})" if report.line else ""
        size = f"{path.stat().st_size:,} bytes" if path.exists() else "missing"
        if _cut_off(exc):
            raise DataError(f"{shown}: the file is cut off{where}: its data ends before its end marker "
                            f"({type(exc).__name__}: {exc}; the file is {size}). An interrupted download or copy "
                            f"leaves such a file: fetch or copy it again.") from None
        raise DataError(f"{shown}: cannot be read{where} ({type(exc).__name__}: {exc}; the file is {size}). "
                        f"Check that it is the kind its name says (.gz, .zip, .parquet, UTF-8 text).") from None


def check_complete(path: Path, shown: str | Path | None = None) -> None:
    """Decode a gzip, zip or Parquet file to its end (CRC checks included): a file cut short by an
    interrupted download or copy fails here, as one DataError naming ``shown``, before anything records it."""
    with reading(path, shown or path, ReadReport()):
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                while f.read(1 << 22):
                    pass
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                damaged = z.testzip()
            if damaged:
                raise zipfile.BadZipFile(f"member {damaged} fails its CRC check")
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            pq.ParquetFile(path)


def ends_with_line_end(path: Path) -> bool:
    """Whether an uncompressed text file's last byte ends a line (an empty file counts as ended)."""
    if path.suffix in (".gz", ".zip", ".parquet"):
        return True  # a cut compressed file fails to decode instead
    size = path.stat().st_size
    if not size:
        return True
    with open(path, "rb") as f:
        f.seek(size - 1)
        return f.read(1) in (b"\n", b"\r")


def _last_line_notice(path: Path, report: ReadReport, kept: bool) -> None:
    if not ends_with_line_end(path):
        what = ("read as a complete record" if kept else "skipped as malformed")
        report.notices.append(f"{path}: the last line has no line end and was {what}; if the file was cut off "
                              f"(an interrupted copy), copy it again")


def _id(value, path: Path, line_no: int, what: str) -> str:
    """A user or item id: a string or an integer (a float, a boolean, a list... is refused: 12.0 and 12
    would silently be two items)."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise DataError(f"{path}:{line_no}: the {what} id {value!r} is a {type(value).__name__}; ids must be strings "
                    f"or integers. Fix that field, or drop the line.")


def _pick(rec: dict, keys: Iterable[str]):
    for k in keys:
        v = rec.get(k)
        if v is not None and v != "":
            return v
    return None


MAX_TIMESTAMP = 2 ** 62  # beyond nanoseconds of any date: a value outside is not a time (and not an Int64)


def parse_timestamp(value, path: Path, line_no: int) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        number = int(value) if isinstance(value, int) else int(float(str(value).strip()))
    except (TypeError, ValueError, OverflowError):  # NaN and infinity included
        raise DataError(
            f"{path}:{line_no}: timestamp {value!r} is not a number; timestamps must be Unix times "
            f"(seconds or milliseconds). Convert the column, or drop that line."
        ) from None
    if not -MAX_TIMESTAMP < number < MAX_TIMESTAMP:
        raise DataError(f"{path}:{line_no}: timestamp {value!r} is out of the range of any time unit; "
                        f"timestamps must be Unix times (seconds or milliseconds). Fix or drop that line.")
    return number


def _json_lines(path: Path, bad: BadLines, report: ReadReport) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record); JSON first, then a Python-literal parser (old Amazon metadata)."""
    last_ok = True
    with open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            report.line = line_no
            if not line.strip():
                continue
            report.lines_read += 1
            report.check_text(path, line_no, line)
            last_ok = False
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                try:
                    rec = ast.literal_eval(line.strip())
                    report.literal_fallbacks += 1
                except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                    bad.add(line_no, "not JSON")
                    continue
            if not isinstance(rec, dict):
                bad.add(line_no, "not a JSON object")
                continue
            last_ok = True
            yield line_no, rec
    _last_line_notice(path, report, kept=last_ok)


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
        users.append(_id(u, path, line_no, "user"))
        items.append(_id(i, path, line_no, "item"))
        times.append(parse_timestamp(t, path, line_no))
    return pl.DataFrame({"user": users, "item": items, "timestamp": times},
                        schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64})


def _first_bad_timestamp(df: pl.DataFrame, col: str) -> int | None:
    as_num = df[col].str.strip_chars().cast(pl.Float64, strict=False)
    bad = (as_num.is_null() | ~(as_num.abs() < MAX_TIMESTAMP).fill_null(True)) & df[col].is_not_null()
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
        first = f.readline()
        if not first.strip() and not f.read(1 << 16).strip():
            raise DataError(f"{path}: no interactions to read: it is empty (not even a header row). Check that "
                            f"the right file was copied, and copy it again.")
        first = first.rstrip("\n\r")
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
    report.header_rows += int(header)
    df = None
    try:
        df = pl.read_csv(path, separator=separator, has_header=False, skip_rows=1 if header else 0,
                         new_columns=file_names, infer_schema=False, quote_char='"', encoding=encoding)
        df = df.select(wanted)
        if (df.null_count().sum_horizontal().item() or df.width != 3
                or df.select(pl.any_horizontal(pl.all().str.contains("\n")).any()).item()):
            df = None  # ragged or empty fields, a quote left open: let the careful reader classify them
    except DECODE_ERRORS:
        df = None  # the careful reader names the line, or `reading` the decoding failure
    if df is not None:
        _last_line_notice(path, report, kept=True)
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
        end = 0
        last_ok = True
        for row in reader:
            line_no, end = end + 1, reader.line_num
            report.line = end
            if header and line_no == 1:
                continue
            if not row:
                continue
            report.lines_read += 1
            report.check_text(path, line_no, "".join(row))
            last_ok = False
            if end > line_no:  # a quote opened and not closed on its line swallowed the lines after it
                raise DataError(f"{path}:{line_no}: a quoted field opened on this line runs on to line {end}, "
                                f"taking the lines between into one field; close the quote (or remove it).")
            if len(row) != len(file_names):
                bad.add(line_no, f"{len(row)} fields, expected {len(file_names)}")
                continue
            last_ok = True
            u, i, t = row[idx["user"]], row[idx["item"]], row[idx["timestamp"]]
            for what, v in (("user", u), ("item", i), ("timestamp", t)):
                if v.strip() == "":
                    raise DataError(f"{path}:{line_no}: empty {what} field ({columns[what]!r}); "
                                    f"every interaction needs a user, an item and a timestamp.")
            users.append(u)
            items.append(i)
            times.append(parse_timestamp(t, path, line_no))
    _last_line_notice(path, report, kept=last_ok)
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


def items_frame(rows: list[dict], fields: Iterable[str]) -> pl.DataFrame:
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
        row = {"raw_item_id": _id(item, path, line_no, "item")}
        for name, keys in TEXT_FIELDS.items():
            row[name] = _text(_pick(rec, keys))
        rows.append(row)
    return items_frame(rows, TEXT_FIELDS)


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
        for position, item in enumerate(seq):
            if not (isinstance(item, str) and item.strip()
                    or isinstance(item, int) and not isinstance(item, bool)):
                raise DataError(f"{path}: user {u!r}, position {position}: {item!r} is not an item id (ids are "
                                f"strings or integers); remove it from the list or put the right id there.")
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
    return items_frame(rows, fields)


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
        for ours in ("user", "item", "timestamp"):
            empty = (df[ours].is_null() | (df[ours].cast(pl.String).str.strip_chars() == "")).arg_true()
            if len(empty):
                raise DataError(f"{path}: row {int(empty[0]) + 1}: empty {ours} ({columns[ours]!r}); every "
                                f"interaction needs a user, an item and a timestamp ({len(empty):,} rows lack one).")
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
            users.append(_id(vals["user"], path, line_no, "user"))
            items.append(_id(vals["item"], path, line_no, "item"))
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


# Unix time units a timestamp column may hold, coarsest first, with the range of values that reads as a date
# between 1973 and 5138 in that unit: a column mixing them (a tool that wrote milliseconds for part of the
# rows) would order those users' items wrongly.
UNIX_UNITS = (("seconds", 1e8, 1e11), ("milliseconds", 1e11, 1e14), ("microseconds", 1e14, 1e17))


def harmonise_time_units(inter: pl.DataFrame, where: str, report: ReadReport) -> pl.DataFrame:
    """Convert the values of coarser Unix units in a timestamp column to its finest one (x1000 per step),
    recording the repair; a column of one unit (or of other numbers, such as positions) is returned as is."""
    t = inter["timestamp"]
    present = [k for k, (_, lo, hi) in enumerate(UNIX_UNITS) if ((t >= lo) & (t < hi)).any()]
    if len(present) < 2:
        return inter
    finest = present[-1]
    factor = pl.lit(1, dtype=pl.Int64)
    for k in present[:-1]:
        _, lo, hi = UNIX_UNITS[k]
        factor = pl.when((pl.col("timestamp") >= lo) & (pl.col("timestamp") < hi)).then(1000 ** (finest - k)) \
            .otherwise(factor)
    scale = inter.select(factor.alias("f"))["f"]
    converted = scale > 1
    n = int(converted.sum())
    first = inter.filter(converted).row(0, named=True)
    report.timestamps_converted += n
    names = ", ".join(UNIX_UNITS[k][0] for k in present[:-1])
    report.repairs.append(
        f"converted {n:,} of {inter.height:,} timestamps of {where} from {names} to {UNIX_UNITS[finest][0]} "
        f"(the column mixes units; first: user {first['user']}, item {first['item']}, timestamp {first['timestamp']})")
    return inter.with_columns(pl.col("timestamp") * scale)


def require_interactions(inter: pl.DataFrame, path: Path, report: ReadReport) -> None:
    """An interactions file that gave no row is refused here, saying why, instead of after the k-core
    filter (whose message would blame filter.k)."""
    if inter.height:
        return
    skipped = report.bad_lines.get(path.name, 0)
    if skipped:
        why = f"all {skipped:,} of its lines are malformed (first: {report.first_bad[path.name]})"
    elif report.lines_read or report.header_rows or path.suffix == ".parquet":
        why = "it holds a header but no interaction rows"
    else:
        why = "it is empty"
    raise DataError(f"{path}: no interactions to read: {why}. Check that the right file was copied, and copy "
                    f"it again.")


def read_interactions(path: Path, shown: str, report: ReadReport, read) -> pl.DataFrame:
    """``read()`` the interactions file ``path`` inside :func:`reading`, refusing a file that gave no row;
    ``shown`` is the name errors give it (the user's own file for the local source)."""
    report.interactions_file = shown
    with reading(path, shown, report):
        report.lines_read = report.header_rows = 0
        inter = read()
        require_interactions(inter, path, report)
    return inter


def read_item_text(path: Path, shown: str, report: ReadReport, read) -> pl.DataFrame:
    """``read()`` the item text file ``path`` inside :func:`reading`."""
    with reading(path, shown, report):
        return read()
