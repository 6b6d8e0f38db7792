"""Bad input never passes silently and never ends in a traceback (docs/data.md, "Bad input").

Every known class of bad input and bad params (tests/bad_input_cases.py, which the census script
scripts/bad_input_census.py runs as well) is tried against the stage commands, run in this process without
an orchestrator: each gives its clear error or its printed repair (tests/test_stage_errors.py runs some of
them through Prefect).

A property-based test (hypothesis) corrupts interaction and sequence files at random: cut at a random byte
(compressed or not), garbage lines, fields of the wrong type, empty and header-only files, timestamps that
mix seconds and milliseconds, values in a sequence that are not item ids. For each, the download and
filter stages (run as `run_stage` runs them) either succeed with the result of the clean part of the input,
or exit with status 1 and a message that names the user's file and holds no traceback, leaving the
previous output of the filter stage byte for byte as it was.

The examples are drawn deterministically (the `ci` profile); ``HYPOTHESIS_PROFILE=explore`` draws a
thousand fresh ones per format.
"""
from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline.config import params_from_dict
from pipeline.data.download import download
from pipeline.data.prepare import SEQUENCE_FILES, prepare
from pipeline.orchestration.flows import run_stage
from tests.bad_input_cases import (
    CASES,
    MAX_BAD_LINES,
    RECORDS,
    CleanRuns,
    gz,
    in_process,
    params_for,
    parquet_bytes,
    sequences_bytes,
    snapshot,
    try_case,
)

settings.register_profile("ci", max_examples=25, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("explore", max_examples=1000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ----- every known case ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory) -> CleanRuns:
    """One clean run per clean file, shared by the cases (each works in a copy)."""
    return CleanRuns(tmp_path_factory.mktemp("clean"), in_process)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_known_bad_input_gives_a_clear_error_or_a_printed_repair(case, clean_runs, tmp_path):
    verdict = try_case(case, clean_runs.workspace(case, tmp_path / "work"), in_process)
    assert verdict.outcome == case.outcome, verdict.explain(case)


# ----- files in each format ----------------------------------------------------------------------------------
TABLE_FORMATS = ("csv", "tsv", "csv.gz", "jsonl", "jsonl.gz", "parquet")
FORMATS = TABLE_FORMATS + ("sequences",)


def file_name(fmt: str) -> str:
    return "Toy.inter.json" if fmt == "sequences" else f"inter.{fmt}"


def record_lines(fmt: str, records) -> list[str]:
    if fmt.startswith("csv") or fmt == "tsv":
        sep = "\t" if fmt == "tsv" else ","
        return [sep.join(map(str, r)) for r in records]
    return [json.dumps({"user": u, "item": i, "timestamp": t}) for u, i, t in records]


def header(fmt: str) -> list[str]:
    if fmt.startswith("csv"):
        return ["user,item,timestamp"]
    return ["user\titem\ttimestamp"] if fmt == "tsv" else []


def encode(fmt: str, text: bytes) -> bytes:
    return gz(text) if fmt.endswith(".gz") else text


def table_bytes(fmt: str, records) -> bytes:
    if fmt == "parquet":
        return parquet_bytes(records)
    if fmt == "sequences":
        return sequences_bytes(records)
    return encode(fmt, ("\n".join(header(fmt) + record_lines(fmt, records)) + "\n").encode())


# ----- running the stages as `python -m stages.download` / `stages.filter` run their bodies ---------------------
@dataclass
class Outcome:
    status: int  # 0, or the exit status of the first stage that failed
    stdout: str
    stderr: str
    failed_stage: str | None = None
    tables: dict[str, pl.DataFrame] = field(default_factory=dict)


def run_stages(work: Path, fmt: str, content: bytes) -> Outcome:
    """Write the user's file, then run the download and filter stages in this process (no Prefect)."""
    (work / "in").mkdir(parents=True, exist_ok=True)
    (work / "in" / file_name(fmt)).write_bytes(content)
    params = params_from_dict(params_for(work, file_name(fmt)))
    out, err = io.StringIO(), io.StringIO()
    bodies = {"download": lambda: download(params.data, work / "raw"),
              "filter": lambda: prepare(params, work / "raw", work / "sequences")}
    for name, body in bodies.items():
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run_stage(name, body)
            except SystemExit as exc:
                return Outcome(int(exc.code), out.getvalue(), err.getvalue(), name)
    tables = {name: pl.read_parquet(work / "sequences" / f"{name}.parquet") for name in SEQUENCE_FILES}
    tables["interactions"] = tables["interactions"].drop("timestamp")  # a repaired unit changes the values only
    return Outcome(0, out.getvalue(), err.getvalue(), tables=tables)


def reference(fmt: str, records) -> dict[str, pl.DataFrame]:
    """The stages' tables on a clean file holding ``records`` (none: the filter empties it); most examples
    share one clean part, so each is computed once."""
    return _reference(fmt, tuple(records))


@functools.lru_cache(maxsize=None)
def _reference(fmt: str, records: tuple) -> dict[str, pl.DataFrame]:
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_stages(Path(tmp), fmt, table_bytes(fmt, records))
    return outcome.tables


def same_tables(a: dict, b: dict) -> bool:
    return bool(a) and a.keys() == b.keys() and all(a[k].equals(b[k]) for k in a)


# ----- corruptions ----------------------------------------------------------------------------------------------
@dataclass
class Case:
    kind: str
    content: bytes
    clean: list  # the records of the clean part of the input
    must_succeed: bool = False  # a repair the stage documents, or skipped lines under the limit
    also_clean: list | None = None  # a cut-off last line that parses: kept, with a notice
    notice: str | None = None  # what the stage must print when it succeeds


NOT_A_NUMBER = st.sampled_from(["", "abc", "2020-01-01", "nan", "inf", "1e", "--", "null", "[1]", "12:30"])
WRONG_JSON_IDS = st.sampled_from([None, True, 1.5, [1], {"a": 1}, ""])
# (json.dumps writes float("inf") as Infinity, which is not JSON: a malformed line, skipped, not a wrong type)
WRONG_JSON_TIMES = st.sampled_from([None, False, "abc", [1600000000], {"t": 1}, "nan", "1e999", 1.5e300])


@st.composite
def garbage_line(draw, fmt: str) -> bytes:
    """A line that is not a record: no field separator (delimited files); for JSON lines, any bytes."""
    forbidden = {b"\n", b"\r"} | ({b","} if fmt.startswith("csv") else {b"\t"} if fmt == "tsv" else set())
    data = draw(st.binary(min_size=1, max_size=40))
    return bytes(b for b in data if bytes([b]) not in forbidden) or b"x"


@st.composite
def corrupted(draw, fmt: str) -> Case:
    records = RECORDS
    kinds = ["cut", "empty", "header_only", "mixed_units", "wrong_type"]
    if fmt not in ("parquet", "sequences"):
        kinds.append("garbage")
    kind = draw(st.sampled_from(kinds))
    if kind == "cut":
        full = table_bytes(fmt, records)
        at = draw(st.integers(0, len(full) - 1))
        content = full[:at]
        if fmt in ("parquet", "sequences") or fmt.endswith(".gz"):
            return Case(kind, content, [])  # a cut binary or one-object file cannot be read: it must be refused
        lines = content.decode().split("\n")
        body = lines[len(header(fmt)):] if len(lines) > len(header(fmt)) else []
        complete, partial = body[:-1], body[-1] if body else ""
        clean = records[:len(complete)]
        also = None
        if partial:  # a partial record that still parses (a shortened id or time) is kept, with a notice
            also = clean + [parse_partial(fmt, partial)] if parse_partial(fmt, partial) else None
        return Case(kind, content, clean, also_clean=also, notice="no line end" if partial else None)
    if kind == "empty":
        return Case(kind, encode(fmt, b"") if fmt.endswith(".gz") else b"", [])
    if kind == "header_only":
        if fmt == "sequences":
            return Case(kind, b"{}", [])
        if fmt == "parquet":
            return Case(kind, table_bytes(fmt, []), [])
        return Case(kind, encode(fmt, ("\n".join(header(fmt) or [""]) + "\n").encode()), [])
    if kind == "mixed_units":
        if fmt == "sequences":  # positions, not times: a wrong id inside a sequence instead
            seqs = json.loads(table_bytes(fmt, records))
            user = draw(st.sampled_from(sorted(seqs)))
            seqs[user][draw(st.integers(0, len(seqs[user]) - 1))] = draw(WRONG_JSON_IDS)
            return Case("not_an_item_id", json.dumps(seqs).encode(), [])
        in_ms = draw(st.lists(st.booleans(), min_size=len(records), max_size=len(records)))
        assume(any(in_ms) and not all(in_ms))
        mixed = [(u, i, t * 1000 + 999 if ms else t) for (u, i, t), ms in zip(records, in_ms)]
        return Case(kind, table_bytes(fmt, mixed), records, must_succeed=True, notice="converted")
    if kind == "wrong_type":
        row = draw(st.integers(0, len(records) - 1))
        if fmt == "sequences":
            return Case(kind, b'{"u0": "i1", "u1": ["i1"]}', [])  # a user whose value is not a list
        if fmt == "parquet":
            bad = pl.DataFrame(records, schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64},
                               orient="row").with_columns(
                user=pl.when(pl.int_range(pl.len()) == row).then(None).otherwise(pl.col("user")))
            buf = io.BytesIO()
            bad.write_parquet(buf)
            return Case(kind, buf.getvalue(), [])
        lines = record_lines(fmt, records)
        column = draw(st.sampled_from(["user", "item", "timestamp"]))
        if fmt.startswith("jsonl"):
            rec = json.loads(lines[row])
            rec[column] = draw(WRONG_JSON_TIMES if column == "timestamp" else WRONG_JSON_IDS)
            lines[row] = json.dumps(rec)
        else:
            sep = "\t" if fmt == "tsv" else ","
            fields = lines[row].split(sep)
            fields[["user", "item", "timestamp"].index(column)] = "" if column != "timestamp" else draw(NOT_A_NUMBER)
            lines[row] = sep.join(fields)
        return Case(kind, encode(fmt, ("\n".join(header(fmt) + lines) + "\n").encode()), [])
    # garbage lines among the records
    n = draw(st.integers(1, MAX_BAD_LINES + 2))
    garbage = [draw(garbage_line(fmt)) for _ in range(n)]
    lines = [line.encode() for line in record_lines(fmt, records)]
    for g in garbage:
        lines.insert(draw(st.integers(0, len(lines))), g)
    hdr = [h.encode() for h in header(fmt)]
    content = encode(fmt, b"\n".join(hdr + lines) + b"\n")
    malformed = [g for g in garbage if g.strip()]  # blank lines are no records and no errors
    harmless = not any(g.lstrip().startswith(b'"') for g in garbage) and not any(json_object(g) for g in garbage)
    return Case(kind, content, records, must_succeed=harmless and len(malformed) <= MAX_BAD_LINES,
                notice="malformed line" if malformed and harmless and len(malformed) <= MAX_BAD_LINES else None)


def json_object(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def parse_partial(fmt: str, line: str):
    """The record a cut-off last line still holds, if it is a complete one (else None)."""
    if fmt.startswith("jsonl"):
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        return (rec["user"], rec["item"], rec["timestamp"]) if isinstance(rec, dict) and len(rec) == 3 else None
    fields = line.split("\t" if fmt == "tsv" else ",")
    if len(fields) != 3 or not all(fields) or not fields[2].isdigit():
        return None
    return fields[0], fields[1], int(fields[2])


# ----- the property ---------------------------------------------------------------------------------------------
def check_property(fmt: str, case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        first = run_stages(work, fmt, table_bytes(fmt, RECORDS))
        assert first.status == 0, first.stderr
        before = snapshot(work / "sequences")
        outcome = run_stages(work, fmt, case.content)
        user_file = str(work / "in" / file_name(fmt))
        if outcome.status == 0:
            expected = reference(fmt, case.clean)
            repaired = reference(fmt, case.also_clean) if case.also_clean else {}
            assert same_tables(outcome.tables, expected) or same_tables(outcome.tables, repaired), \
                f"{case.kind}: the stage succeeded with another result than the clean part of its input"
            if not same_tables(outcome.tables, expected):  # the cut-off last line was kept: said so
                assert "no line end" in outcome.stdout and user_file in outcome.stdout, outcome.stdout
            if case.kind in ("mixed_units", "garbage") and case.notice:  # the repair or the skipping is printed
                assert case.notice in outcome.stdout and user_file in outcome.stdout, outcome.stdout
        else:
            assert not case.must_succeed, f"{case.kind}: refused input the stage documents a repair for:\n" \
                                          f"{outcome.stderr}"
            assert outcome.status == 1, outcome.stderr
            assert user_file in outcome.stderr, outcome.stderr
            assert "Traceback" not in outcome.stderr + outcome.stdout
            assert snapshot(work / "sequences") == before, "a refused run changed the previous output"


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupted_input_gives_the_clean_result_or_one_clear_error(fmt):
    @given(corrupted(fmt))
    def prop(case):
        check_property(fmt, case)

    prop()


# ----- params: range-checked before a stage writes (the stage-level check is in tests/test_stage_errors.py) ------
@pytest.mark.parametrize("model", ["tiger", "decor", "etegrec", "discrec"])
@pytest.mark.parametrize("setting, value", [("num_layers", 0), ("num_decoder_layers", -1), ("d_model", 0),
                                            ("num_heads", 0), ("d_ff", 0), ("dropout", 1.5),
                                            ("dropout", float("nan")), ("num_layers", 2.5)])
def test_every_generative_backbone_refuses_out_of_range_sizes(model, setting, value):
    from pipeline.models.registry import model_class

    config_class = model_class(model, f"methods.{model}").config_class
    sizes = {"n_items": 10, "depth": 4, "codebook_size": 8}
    assert config_class.from_dict(sizes).num_layers >= 1  # the defaults are in range
    with pytest.raises(ValueError, match=setting):
        config_class.from_dict({**sizes, setting: value})
