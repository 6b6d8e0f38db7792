"""Every class of bad input and bad params we know of, each with what the stages promise for it (docs/data.md,
"Bad input"), and the one harness that tries a case against the stage commands.

A case starts from a copy of a clean run (download and filter on the clean file; its outputs are "the
previous outputs"), writes its bad file or params, runs its stage command(s) again, and is judged against
its expected outcome:

- ``"error"``, a clear error: exit status 1; the message names the user's file (for bad params, the key:
  the phrase holds it) and says the case's phrase; no traceback; the previous outputs of the stage that
  refused, byte for byte as they were;
- ``"repair"``, a printed repair: exit status 0 and a ``note:`` naming the user's file and saying the phrase
  (and, where a case says so, the clean run's splits and the expected filter metrics).

One list, three users: scripts/bad_input_census.py runs every case as commands (`python -m stages.<name>`,
optionally through a Prefect server) and prints a table; tests/test_bad_input.py runs every case with the
commands in this process (``in_process``, no orchestrator); tests/test_stage_errors.py runs some of them
through one Prefect server and adds the Prefect-specific checks. tests/test_bad_input.py's property test
(random corruption) uses the records, the params builder and the snapshot from here as well.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import runpy
import shutil
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
MAX_BAD_LINES = 3  # filter.max_bad_lines in every case's params
BASE_TIME = 1_600_000_000  # Unix seconds (2020)
# 10 users x 6 of 8 items, distinct times 37 s apart: every user and item survives the 5-core filter.
RECORDS = [(f"u{u}", f"i{(u + j) % 8}", BASE_TIME + 1000 * u + 37 * j) for u in range(10) for j in range(6)]
COLUMNS = ("user", "item", "timestamp")


# ----- the user's file in each format --------------------------------------------------------------------------
def csv_bytes(records=RECORDS, sep: str = ",") -> bytes:
    rows = [sep.join(COLUMNS)] + [sep.join(map(str, r)) for r in records]
    return ("\n".join(rows) + "\n").encode()


def jsonl_bytes(records=RECORDS) -> bytes:
    return ("\n".join(json.dumps(dict(zip(COLUMNS, r))) for r in records) + "\n").encode()


def parquet_bytes(records=RECORDS) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame(records, schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64},
                 orient="row").write_parquet(buf)
    return buf.getvalue()


def sequences_bytes(records=RECORDS) -> bytes:
    """The ``sequences`` format (``<name>.inter.json``): each user's items in time order."""
    seqs: dict[str, list] = {}
    for u, i, _ in sorted(records, key=lambda r: (r[0], r[2])):
        seqs.setdefault(u, []).append(i)
    return json.dumps(seqs).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def half(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


def with_line(data: bytes, at: int, line: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[at] = line
    return b"\n".join(lines)


def with_lines(data: bytes, at: int, *extra: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[at:at] = list(extra)
    return b"\n".join(lines)


# ----- the params and the previous outputs -----------------------------------------------------------------------
def params_for(work: Path, file: str, extra: dict | None = None) -> dict:
    """params.yaml for a workspace reading ``<work>/in/<file>`` (a table, or ``<name>.inter.json`` sequences),
    with ``extra`` merged in."""
    local = {"dir": str(work / "in")}
    if file.endswith(".inter.json"):
        local |= {"format": "sequences", "name": file.split(".")[0]}
    else:
        local |= {"format": "table", "interactions": file, "user_column": "user", "item_column": "item",
                  "time_column": "timestamp"}
    base = {"data": {"source": "local", "local": local}, "filter": {"k": 5, "max_bad_lines": MAX_BAD_LINES},
            "methods": {"sasrec": {"model": "sasrec", "inputs": ["data/interim/sequences"], "train": {"epochs": 1}}}}
    return merge(base, extra or {})


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of each file under ``folder`` by its path inside it (none: {})."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


# ----- the cases -------------------------------------------------------------------------------------------------
DELETE = b"<delete>"  # Case.bad: the user's file is removed
# the command(s) each refusing stage is run with (download runs before filter), and the outputs it must keep
COMMANDS = {"download": (("stages.download",),), "filter": (("stages.download",), ("stages.filter",)),
            "train": (("stages.train", "sasrec"),)}
GUARDED = {"download": "data/raw", "filter": "data/interim", "train": "data/models"}
SPLITS = tuple(f"sequences/{s}.parquet" for s in ("train", "valid", "test"))


@dataclass(frozen=True)
class Case:
    name: str
    file: str  # the user's interactions file under in/
    clean: bytes  # its content in the clean run
    bad: bytes | None  # its bad content; None: the same file (the params are what is bad); DELETE: removed
    expect: str  # "error" | "repair"
    stage: str = "filter"  # the stage that must refuse or repair
    params: dict | None = None  # overrides applied with the bad input
    phrase: str = ""  # what the message or note must say; "{file}" stands for the user's file
    absent: str = ""  # what the message must not say (an error blamed on the wrong cause)
    same_splits: bool = False  # a repair that gives the clean run's train/valid/test splits
    metrics: dict = field(default_factory=dict)  # a repair's values in reports/metrics/filter.json

    @property
    def commands(self) -> tuple[tuple[str, ...], ...]:
        return COMMANDS[self.stage]

    def user_file(self, work: Path) -> Path:
        return work / "in" / self.file

    def said(self, work: Path) -> str:
        """The phrase, the user's file in ``work`` in place of "{file}"."""
        return self.phrase.replace("{file}", str(self.user_file(work)))

    @property
    def outcome(self) -> str:
        """The outcome ``try_case`` must report."""
        return {"error": "clear error", "repair": "repair printed"}[self.expect]


def _data_cases() -> list[Case]:
    c, j, p, s = csv_bytes(), jsonl_bytes(), parquet_bytes(), sequences_bytes()
    nothing = "filter.k"  # an empty file is not blamed on the k-core filter
    mixed = [(u, i, t * 1000 if n % 2 else t) for n, (u, i, t) in enumerate(RECORDS)]
    return [
        Case("csv.gz cut off", "inter.csv.gz", gz(c), half(gz(c)), "error", "download", phrase="is cut off"),
        Case("jsonl.gz cut off", "inter.jsonl.gz", gz(j), half(gz(j)), "error", "download", phrase="is cut off"),
        Case("parquet cut off", "inter.parquet", p, half(p), "error", "download", phrase="cut off"),
        Case("plain .csv named .csv.gz", "inter.csv.gz", gz(c), c, "error", "download", phrase="cannot be read"),
        Case("csv cut mid-line (last line kept)", "inter.csv", c, c[:-4], "repair", phrase="no line end"),
        Case("jsonl cut mid-line (last line skipped)", "inter.jsonl", j, j[:-20], "repair", phrase="no line end"),
        Case("empty csv", "inter.csv", c, b"", "error", phrase="it is empty", absent=nothing),
        Case("empty jsonl", "inter.jsonl", j, b"", "error", phrase="it is empty", absent=nothing),
        Case("empty .gz", "inter.csv.gz", gz(c), gz(b""), "error", phrase="it is empty", absent=nothing),
        Case("header-only csv", "inter.csv", c, csv_bytes([]), "error",
             phrase="it holds a header but no interaction rows", absent=nothing),
        Case("parquet without rows", "inter.parquet", p, parquet_bytes([]), "error", phrase="header but no",
             absent=nothing),
        Case("all lines malformed", "inter.csv", c, b"user,item,timestamp\nx\ny\n", "error",
             phrase="all 2 of its lines are malformed", absent=nothing),
        Case("2 garbage lines (limit 3)", "inter.csv", c, with_lines(c, 3, b"garbage", b"\x00\xff"), "repair",
             phrase="skipped 2 malformed line(s) of {file} (first: line 4: 1 fields, expected 3)"),
        Case("5 garbage lines (limit 3)", "inter.csv", c, with_lines(c, 3, *[b"garbage"] * 5), "error",
             phrase="max_bad_lines"),
        Case("a JSON array line", "inter.jsonl", j, with_lines(j, 2, b"[1, 2, 3]"), "repair",
             phrase="not a JSON object"),
        Case("a JSON object line without user", "inter.jsonl", j, with_lines(j, 2, b'{"item": "i1", "timestamp": 1}'),
             "error", phrase="missing user"),
        Case("empty item field", "inter.csv", c, with_line(c, 2, b"u0,,1600000037"), "error", phrase="empty item"),
        Case("float item id", "inter.jsonl", j,
             with_line(j, 1, b'{"user": "u0", "item": 1.5, "timestamp": 1600000037}'), "error", phrase="is a float"),
        Case("list user id", "inter.jsonl", j,
             with_line(j, 1, b'{"user": ["u0"], "item": "i1", "timestamp": 1600000037}'), "error", phrase="is a list"),
        Case("boolean timestamp", "inter.jsonl", j,
             with_line(j, 1, b'{"user": "u0", "item": "i1", "timestamp": true}'), "error", phrase="not a number"),
        Case("text timestamp", "inter.csv", c, with_line(c, 2, b"u0,i1,2020-09-13"), "error", phrase="not a number"),
        Case("NaN timestamp", "inter.csv", c, with_line(c, 2, b"u0,i1,nan"), "error", phrase="not a number"),
        Case("timestamp 1e300", "inter.csv", c, with_line(c, 2, b"u0,i1,1e300"), "error", phrase="out of the range"),
        Case("seconds and milliseconds mixed", "inter.csv", c, csv_bytes(mixed), "repair",
             phrase="converted 30 of 60 timestamps of {file} from seconds to milliseconds", same_splits=True,
             metrics={"timestamps_converted": 30}),
        Case("unclosed quote", "inter.csv", c, with_line(c, 2, b'u0,"i1,1600000037'), "error", phrase="quoted field"),
        Case("Latin-1 bytes in an id", "inter.csv", c, with_line(c, 2, b"u0,caf\xe9,1600000037"), "repair",
             phrase="not UTF-8"),
        Case("wrong column name", "inter.csv", c, c.replace(b"user,", b"usr,", 1), "error", phrase="missing user"),
        Case("nothing survives the 5-core", "inter.csv", c, csv_bytes(RECORDS[:12]), "error",
             phrase="no interactions left"),
        Case("file missing", "inter.csv", c, DELETE, "error", "download", phrase="not found"),
        Case("null in a sequence", "Toy.inter.json", s, s.replace(b'"i2"', b"null", 1), "error",
             phrase="user 'u0', position 2: None is not an item id"),
        Case("a sequence that is not a list", "Toy.inter.json", s, json.dumps({**json.loads(s), "u0": "i0"}).encode(),
             "error", phrase="expected a list"),
        Case("sequences file not JSON", "Toy.inter.json", s, half(s), "error", phrase="not valid JSON"),
        Case("empty sequences object", "Toy.inter.json", s, b"{}", "error", phrase="no interactions"),
    ]


def _params_cases() -> list[Case]:
    c = csv_bytes()
    sasrec = lambda **kw: {"methods": {"sasrec": kw}}  # noqa: E731
    return [
        Case("negative learning rate", "inter.csv", c, None, "error", "train", sasrec(train={"lr": -0.001}),
             "methods.sasrec.train.lr: Input should be greater than 0"),
        Case("dropout 1.5", "inter.csv", c, None, "error", "train", sasrec(backbone={"dropout": 1.5}),
             "methods.sasrec.backbone: dropout: Input should be less than 1, got 1.5"),
        Case("batch size 0", "inter.csv", c, None, "error", "train", sasrec(train={"batch_size": 0}),
             "methods.sasrec.train.batch_size: Input should be greater than or equal to 1"),
        Case("unknown key", "inter.csv", c, None, "error", "train", sasrec(train={"learning_rate": 0.1}),
             "methods.sasrec.train.learning_rate: unknown key"),
        Case("negative seed", "inter.csv", c, None, "error", "train", {"seed": -1},
             "seed: Input should be greater than or equal to 0"),
        Case("filter.k 0", "inter.csv", c, None, "error", "filter", {"filter": {"k": 0}},
             "filter.k: Input should be greater than or equal to 1"),
        Case("max_history -1", "inter.csv", c, None, "error", "filter", {"filter": {"max_history": -1}},
             "filter.max_history: Input should be greater than or equal to 1"),
    ]


CASES: list[Case] = _data_cases() + _params_cases()
BY_NAME: dict[str, Case] = {case.name: case for case in CASES}
assert len(BY_NAME) == len(CASES), "two cases share a name"


# ----- running the stage commands --------------------------------------------------------------------------------
@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


Run = Callable[..., Result]  # run(work, "stages.train", "sasrec"): `python -m stages.train sasrec` in work


def stage_env(**extra: str) -> dict:
    """The environment of the stage commands: this repository importable, no MLflow tracking, no Hub."""
    return {**os.environ, "PYTHONPATH": str(REPO), "GENREC_TRACKING": "0", "HF_HUB_OFFLINE": "1", **extra}


def command_runner(env: dict) -> Run:
    """``python -m <stage> <args>`` in a child process, as DVC runs it."""
    def run(work: Path, *args: str) -> Result:
        proc = subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@contextlib.contextmanager
def _patched(work: Path, argv: list[str], env: dict):
    """In ``work``, with ``argv`` and ``env``; then back, torch's thread count too (train@ pins it)."""
    cwd, old_argv, old_env = os.getcwd(), sys.argv, {k: os.environ.get(k) for k in env}
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch else None
    os.chdir(work)
    sys.argv = argv
    os.environ.update(env)
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.argv = old_argv
        if threads:
            torch.set_num_threads(threads)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def in_process(work: Path, *args: str) -> Result:
    """``python -m <stage> <args>`` run in this process (its ``__main__`` block, no orchestrator): the same
    stage body, message and exit status as the command, without a new interpreter's start-up."""
    out, err = io.StringIO(), io.StringIO()
    env = {"GENREC_ORCHESTRATOR": "none", "GENREC_TRACKING": "0", "HF_HUB_OFFLINE": "1"}
    with _patched(work, list(args), env), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            runpy.run_module(args[0], run_name="__main__")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 (reported as the interpreter reports an uncaught exception)
            traceback.print_exc()
            code = 1
    return Result(code, out.getvalue(), err.getvalue())


# ----- a clean run, then a case ----------------------------------------------------------------------------------
def write_params(work: Path, file: str, extra: dict | None = None) -> None:
    (work / "params.yaml").write_text(yaml.safe_dump(params_for(work, file, extra)))


class CleanRuns:
    """Clean runs (download and filter on a case's clean file, and a previous model folder), one per file and
    content, under ``root``; each case gets a copy of its own."""

    def __init__(self, root: Path, run: Run):
        self.root, self.run, self.done = root, run, {}

    def workspace(self, case: Case, dest: Path) -> Path:
        key = (case.file, hashlib.sha256(case.clean).hexdigest())
        if key not in self.done:
            self.done[key] = self.clean_run(self.root / f"clean{len(self.done)}", case.file, case.clean)
        shutil.copytree(self.done[key], dest)
        write_params(dest, case.file)  # its own input folder
        return dest

    def clean_run(self, work: Path, file: str, content: bytes) -> Path:
        (work / "in").mkdir(parents=True)
        (work / "in" / file).write_bytes(content)
        write_params(work, file)
        for command in COMMANDS["filter"]:
            result = self.run(work, *command)
            if result.returncode:
                raise RuntimeError(f"the clean run of {file} failed ({' '.join(command)}):\n"
                                   f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
        # train@sasrec's previous folder (a stand-in: the cases' params are refused before it is written)
        folder = work / "data/models/sasrec"
        folder.mkdir(parents=True)
        (folder / "model.json").write_text('{"from": "the previous run"}')
        (folder / "best.safetensors").write_bytes(b"previous weights")
        return work


@dataclass
class Verdict:
    outcome: str  # clear error | unclear error | repair printed | wrong repair | accepted silently | traceback | ...
    message: str  # the message's or note's line that says the phrase (or its first line)
    result: Result  # the last command's
    problems: list[str]  # why the outcome is not a clear error or a printed repair

    def explain(self, case: Case) -> str:
        return (f"{case.name}: expected {case.outcome}, got {self.outcome}"
                + "".join(f"\n  - {p}" for p in self.problems)
                + f"\n--- stdout ---\n{self.result.stdout[-3000:]}\n--- stderr ---\n{self.result.stderr[-3000:]}")


def try_case(case: Case, work: Path, run: Run) -> Verdict:
    """Write the case's bad input or params into ``work`` (a clean run's copy), run its stage command(s)
    and judge what they gave."""
    user_file = case.user_file(work)
    guarded = work / GUARDED[case.stage]
    before = snapshot(guarded)
    if case.bad == DELETE:
        user_file.unlink()
    elif case.bad is not None:
        user_file.write_bytes(case.bad)
    write_params(work, case.file, case.params)
    for command in case.commands:
        result = run(work, *command)
        if result.returncode:
            break
    out = result.stdout + result.stderr
    phrase = case.said(work)
    if "Traceback" in out:
        return Verdict("traceback", out.strip().splitlines()[-1], result, ["a traceback"])
    if result.returncode == 1:
        lines = result.stderr.splitlines()
        message = next((line.strip() for line in lines if phrase and phrase in line),
                       next((line for line in lines if "] error:" in line), ""))
        problems = [p for p, bad in [
            (f"the message does not name {user_file}", case.params is None and str(user_file) not in result.stderr),
            (f"the message does not say {phrase!r}", phrase not in result.stderr),
            (f"the message says {case.absent!r}", case.absent and case.absent in result.stderr),
            (f"{GUARDED[case.stage]} changed", snapshot(guarded) != before)] if bad]
        return Verdict("unclear error" if problems else "clear error", message, result, problems)
    if result.returncode == 0:
        notes = [line for line in result.stdout.splitlines() if "note:" in line]
        note = next((n for n in notes if str(user_file) in n and phrase in n), None)
        if note is None:
            return Verdict("accepted silently", notes[0] if notes else "", result,
                           [f"no note names {user_file} and says {phrase!r}"])
        after = snapshot(guarded)
        metrics_file = work / "reports/metrics/filter.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        problems = [p for p, bad in [
            ("the splits differ from the clean run's",
             case.same_splits and any(after.get(s) != before.get(s) for s in SPLITS)),
            *((f"filter.json: {k} is {metrics.get(k)!r}, expected {v!r}", metrics.get(k) != v)
              for k, v in case.metrics.items())] if bad]
        return Verdict("wrong repair" if problems else "repair printed", note.strip(), result, problems)
    return Verdict(f"status {result.returncode}", out.strip().splitlines()[-1] if out.strip() else "", result,
                   [f"exit status {result.returncode}"])
