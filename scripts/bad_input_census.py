"""Try every class of bad input and bad params we know of against the stage commands, as a new user would,
and print what each gave: a clear error (status 1, the user's file or the params key named, no traceback,
the previous outputs untouched), a repair or skip the stage printed, a silent acceptance, or a traceback.

    python scripts/bad_input_census.py            # plain function calls (GENREC_ORCHESTRATOR=none)
    python scripts/bad_input_census.py --prefect  # through a Prefect server, as `dvc repro` runs the stages

Each case runs in its own temporary folder laid out like the repository root: a clean run first (its outputs
are "the previous outputs"), then the bad input or params, then the stage again.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RECORDS = [(f"u{u}", f"i{(u + j) % 8}", 1_600_000_000 + 1000 * u + 37 * j) for u in range(10) for j in range(6)]


def csv_bytes(records=RECORDS, sep=",", header=True) -> bytes:
    rows = ([sep.join(("user", "item", "timestamp"))] if header else []) + [sep.join(map(str, r)) for r in records]
    return ("\n".join(rows) + "\n").encode()


def jsonl_bytes(records=RECORDS) -> bytes:
    return ("\n".join(json.dumps(dict(zip(("user", "item", "timestamp"), r))) for r in records) + "\n").encode()


def parquet_bytes(records=RECORDS) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame(records, schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64},
                 orient="row").write_parquet(buf)
    return buf.getvalue()


def sequences_bytes() -> bytes:
    return json.dumps({f"u{u}": [f"i{(u + j) % 8}" for j in range(6)] for u in range(10)}).encode()


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


@dataclass
class Case:
    name: str
    file: str  # the user's interactions file name under in/
    clean: bytes
    bad: bytes | None  # None: the same file (the params are what is bad)
    expect: str  # "error" | "repair"
    stage: str = "filter"  # the stage that must refuse or repair (download runs before filter)
    params: dict | None = None  # overrides applied with the bad input
    phrase: str = ""  # what the message must say (besides naming the file or key)


def data_cases() -> list[Case]:
    c, j, p = csv_bytes(), jsonl_bytes(), parquet_bytes()
    gz = lambda b: gzip.compress(b, mtime=0)  # noqa: E731
    return [
        Case("csv.gz cut off", "inter.csv.gz", gz(c), half(gz(c)), "error", "download", phrase="cut off"),
        Case("jsonl.gz cut off", "inter.jsonl.gz", gz(j), half(gz(j)), "error", "download", phrase="cut off"),
        Case("parquet cut off", "inter.parquet", p, half(p), "error", "download", phrase="cut off"),
        Case("plain .csv named .csv.gz", "inter.csv.gz", gz(c), c, "error", "download", phrase="cannot be read"),
        Case("csv cut mid-line (last line kept)", "inter.csv", c, c[:-4], "repair", phrase="no line end"),
        Case("jsonl cut mid-line (last line skipped)", "inter.jsonl", j, j[:-20], "repair", phrase="no line end"),
        Case("empty csv", "inter.csv", c, b"", "error", phrase="it is empty"),
        Case("empty jsonl", "inter.jsonl", j, b"", "error", phrase="it is empty"),
        Case("empty .gz", "inter.csv.gz", gz(c), gz(b""), "error", phrase="it is empty"),
        Case("header-only csv", "inter.csv", c, b"user,item,timestamp\n", "error", phrase="header but no"),
        Case("parquet without rows", "inter.parquet", p, parquet_bytes([]), "error", phrase="header but no"),
        Case("all lines malformed", "inter.csv", c, b"user,item,timestamp\nx\ny\n", "error", phrase="malformed"),
        Case("2 garbage lines (limit 3)", "inter.csv", c, with_lines(c, 3, b"garbage", b"\x00\xff"), "repair",
             phrase="skipped 2 malformed"),
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
        Case("seconds and milliseconds mixed", "inter.csv", c,
             csv_bytes([(u, i, t * 1000 if n % 2 else t) for n, (u, i, t) in enumerate(RECORDS)]), "repair",
             phrase="from seconds to milliseconds"),
        Case("unclosed quote", "inter.csv", c, with_line(c, 2, b'u0,"i1,1600000037'), "error", phrase="quoted field"),
        Case("Latin-1 bytes in an id", "inter.csv", c, with_line(c, 2, b"u0,caf\xe9,1600000037"), "repair",
             phrase="not UTF-8"),
        Case("wrong column name", "inter.csv", c, c.replace(b"user,", b"usr,", 1), "error", phrase="missing user"),
        Case("nothing survives the 5-core", "inter.csv", c, csv_bytes(RECORDS[:12]), "error",
             phrase="no interactions left"),
        Case("file missing", "inter.csv", c, b"<delete>", "error", "download", phrase="not found"),
        Case("null in a sequence", "Toy.inter.json", sequences_bytes(),
             sequences_bytes().replace(b'"i2"', b"null", 1), "error", phrase="not an item id"),
        Case("a sequence that is not a list", "Toy.inter.json", sequences_bytes(),
             json.dumps({**json.loads(sequences_bytes()), "u0": "i0"}).encode(), "error", phrase="expected a list"),
        Case("sequences file not JSON", "Toy.inter.json", sequences_bytes(), half(sequences_bytes()), "error",
             phrase="not valid JSON"),
        Case("empty sequences object", "Toy.inter.json", sequences_bytes(), b"{}", "error", phrase="no interactions"),
    ]


def params_cases() -> list[Case]:
    c = csv_bytes()
    train = lambda **kw: {"methods": {"sasrec": kw}}  # noqa: E731
    return [
        Case("negative learning rate", "inter.csv", c, None, "error", "train", train(train={"lr": -0.001}),
             "methods.sasrec.train.lr"),
        Case("dropout 1.5", "inter.csv", c, None, "error", "train", train(backbone={"dropout": 1.5}), "dropout"),
        Case("batch size 0", "inter.csv", c, None, "error", "train", train(train={"batch_size": 0}),
             "methods.sasrec.train.batch_size"),
        Case("unknown key", "inter.csv", c, None, "error", "train", train(train={"learning_rate": 0.1}),
             "unknown key"),
        Case("negative seed", "inter.csv", c, None, "error", "train", {"seed": -1}, "seed"),
        Case("filter.k 0", "inter.csv", c, None, "error", "filter", {"filter": {"k": 0}}, "filter.k"),
        Case("max_history -1", "inter.csv", c, None, "error", "filter", {"filter": {"max_history": -1}},
             "filter.max_history"),
    ]


def merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def params_for(work: Path, file: str) -> dict:
    local = {"dir": str(work / "in")}
    if file.endswith(".inter.json"):
        local |= {"format": "sequences", "name": file.split(".")[0]}
    else:
        local |= {"format": "table", "interactions": file, "user_column": "user", "item_column": "item",
                  "time_column": "timestamp"}
    return {"data": {"source": "local", "local": local}, "filter": {"k": 5, "max_bad_lines": 3},
            "methods": {"sasrec": {"model": "sasrec", "inputs": ["data/interim/sequences"], "train": {"epochs": 1}}}}


def run(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)


def snapshot(folder: Path) -> dict:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def try_case(case: Case, env: dict) -> tuple[str, str]:
    """(outcome, the message's first line)."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        user_file = work / "in" / case.file
        user_file.write_bytes(case.clean)
        base = params_for(work, case.file)
        (work / "params.yaml").write_text(yaml.safe_dump(base))
        stages = ["stages.download", "stages.filter"]
        for s in stages:
            assert run(work, env, s).returncode == 0, f"{case.name}: the clean run failed"
        if case.stage == "train":
            folder = work / "data/models/sasrec"
            folder.mkdir(parents=True)
            (folder / "model.json").write_text("{}")
        guarded = {"download": work / "data/raw", "filter": work / "data/interim",
                   "train": work / "data/models"}[case.stage]
        before = snapshot(guarded)
        if case.bad == b"<delete>":
            user_file.unlink()
        elif case.bad is not None:
            user_file.write_bytes(case.bad)
        (work / "params.yaml").write_text(yaml.safe_dump(merge(base, case.params or {})))
        proc = None
        for s in {"download": ["stages.download"], "filter": ["stages.download", "stages.filter"],
                  "train": ["stages.train"]}[case.stage]:
            proc = run(work, env, *s.split(), *(["sasrec"] if s == "stages.train" else []))
            if proc.returncode:
                break
        out = proc.stdout + proc.stderr
        named = str(user_file) if case.params is None else case.phrase
        if "Traceback" in out:
            return "traceback", out.strip().splitlines()[-1]
        if proc.returncode == 1:
            lines = proc.stderr.splitlines()
            message = next((line.strip() for line in lines if case.phrase and case.phrase in line),
                           next((line for line in lines if "] error:" in line), ""))
            clear = named in proc.stderr and case.phrase in proc.stderr and snapshot(guarded) == before
            return ("clear error" if clear else "unclear error"), message
        if proc.returncode == 0:
            notes = [line for line in proc.stdout.splitlines() if "note:" in line]
            printed = any(str(user_file) in n and case.phrase in n for n in notes)
            return ("repair printed" if printed else "accepted silently"), (notes[0] if notes else "")
        return f"status {proc.returncode}", out.strip().splitlines()[-1] if out.strip() else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prefect", action="store_true", help="run the stages through a Prefect server")
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENREC_TRACKING": "0", "HF_HUB_OFFLINE": "1"}
    with contextlib.ExitStack() as stack:
        if args.prefect:
            from pipeline.orchestration.flows import prefect_server

            env["PREFECT_HOME"] = stack.enter_context(tempfile.TemporaryDirectory())
            env["PREFECT_API_URL"] = stack.enter_context(prefect_server(env))
        else:
            env["GENREC_ORCHESTRATOR"] = "none"
        cases = data_cases() + params_cases()
        good = 0
        print("| input class | stage | expected | outcome | message or note |\n| --- | --- | --- | --- | --- |")
        t0 = time.perf_counter()
        for case in cases:
            outcome, message = try_case(case, env)
            ok = outcome == {"error": "clear error", "repair": "repair printed"}[case.expect]
            good += ok
            message = message.replace(str(Path(tempfile.gettempdir())), "…").replace("|", "\\|")
            print(f"| {case.name} | {case.stage} | {case.expect} | {outcome}{'' if ok else ' (!)'} | {message[:160]} |",
                  flush=True)
    print(f"\n{good} of {len(cases)} input classes gave a clear error or a printed repair "
          f"({'Prefect' if args.prefect else 'no orchestrator'}; {time.perf_counter() - t0:.0f} s)")
    sys.exit(0 if good == len(cases) else 1)


if __name__ == "__main__":
    main()
