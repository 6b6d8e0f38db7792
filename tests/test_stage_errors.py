"""Each class of bad input and bad params through the stage commands (`python -m stages.<name>`), with Prefect
on as `dvc repro` runs them: one clear message naming the user's file, printed once, no traceback, exit
status 1, and the previous outputs left as they were; or the documented repair, printed at the stage's end."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.orchestration.flows import prefect_server

REPO = Path(__file__).resolve().parents[1]
RECORDS = [(f"u{u}", f"i{(u + j) % 8}", 1_600_000_000 + 1000 * u + 37 * j) for u in range(10) for j in range(6)]


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    env = {**os.environ, "PYTHONPATH": str(REPO), "GENREC_TRACKING": "0", "HF_HUB_OFFLINE": "1",
           "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect"))}
    env.pop("GENREC_ORCHESTRATOR", None)  # Prefect on, as `dvc repro` runs the stages
    with prefect_server(env) as api:
        yield {**env, "PREFECT_API_URL": api}


def csv_text(records, sep=",") -> str:
    return "\n".join([sep.join(("user", "item", "timestamp"))] + [sep.join(map(str, r)) for r in records]) + "\n"


def workspace(tmp_path: Path, file_name: str, content: bytes, **data) -> Path:
    """A folder laid out like the repository root: params.yaml reading ``in/<file_name>``."""
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    (tmp_path / "in" / file_name).write_bytes(content)
    local = {"dir": str(tmp_path / "in"), "format": "table", "interactions": file_name, "user_column": "user",
             "item_column": "item", "time_column": "timestamp"}
    params = {"data": {"source": "local", "local": local, **data}, "filter": {"k": 5, "max_bad_lines": 3},
              "methods": {"sasrec": {"model": "sasrec", "inputs": ["data/interim/sequences"],
                                     "train": {"epochs": 1}}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def stage(work: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_refused_once(proc, user_file: Path, phrase: str) -> None:
    """Status 1; the message names the user's file, says ``phrase`` once; no traceback, no Prefect ERROR line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert str(user_file) in proc.stderr and phrase in proc.stderr, out[-3000:]
    assert out.count(phrase) == 1, out[-3000:]
    assert "Traceback" not in out and "| ERROR" not in out, out[-3000:]


def good_run(work: Path, env: dict) -> None:
    for name in ("stages.download", "stages.filter"):
        proc = stage(work, env, name)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def clean_csv_run(tmp_path_factory, prefect_env) -> Path:
    """A workspace after a clean run on ``RECORDS`` as CSV: its outputs are "the previous outputs"."""
    work = workspace(tmp_path_factory.mktemp("clean"), "inter.csv", csv_text(RECORDS).encode())
    good_run(work, prefect_env)
    return work


def copy_of(clean: Path, tmp_path: Path) -> Path:
    """The clean workspace, copied (params.yaml pointed at the copy's own input folder)."""
    work = tmp_path / "work"
    shutil.copytree(clean, work)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["local"]["dir"] = str(work / "in")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    return work


@pytest.mark.parametrize("name", ["inter.csv.gz", "inter.jsonl.gz"])
def test_a_cut_off_compressed_file_is_refused_before_it_is_copied(tmp_path, prefect_env, name):
    records = ("\n".join(json.dumps(dict(zip(("user", "item", "timestamp"), r))) for r in RECORDS) + "\n"
               if "jsonl" in name else csv_text(RECORDS))
    full = gzip.compress(records.encode(), mtime=0)
    work = workspace(tmp_path, name, full)
    good_run(work, prefect_env)
    raw_before = snapshot(work / "data" / "raw")
    (work / "in" / name).write_bytes(full[: len(full) * 2 // 3])
    proc = stage(work, prefect_env, "stages.download")
    assert_refused_once(proc, work / "in" / name, "is cut off")
    assert snapshot(work / "data" / "raw") == raw_before


@pytest.mark.parametrize("content, phrase", [
    (b"", "it is empty"),
    (b"user,item,timestamp\n", "it holds a header but no interaction rows"),
    (b"user,item,timestamp\nnot a record\nnor this\n", "all 2 of its lines are malformed"),
])
def test_empty_and_header_only_files_are_named_as_such(tmp_path, prefect_env, clean_csv_run, content, phrase):
    work = copy_of(clean_csv_run, tmp_path)
    before = snapshot(work / "data" / "interim")
    (work / "in" / "inter.csv").write_bytes(content)
    assert stage(work, prefect_env, "stages.download").returncode == 0
    proc = stage(work, prefect_env, "stages.filter")
    assert_refused_once(proc, work / "in" / "inter.csv", phrase)
    assert "filter.k" not in proc.stderr  # not blamed on the k-core filter
    assert snapshot(work / "data" / "interim") == before


def test_mixed_seconds_and_milliseconds_are_converted_and_reported(tmp_path, prefect_env, clean_csv_run):
    clean = clean_csv_run
    mixed = [(u, i, t * 1000 if n % 3 == 0 else t) for n, (u, i, t) in enumerate(RECORDS)]
    work = workspace(tmp_path / "mixed", "inter.csv", csv_text(mixed).encode())
    stage(work, prefect_env, "stages.download")
    proc = stage(work, prefect_env, "stages.filter")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"converted 40 of 60 timestamps of {work / 'in' / 'inter.csv'} from seconds to milliseconds" in proc.stdout
    for split in ("train", "valid", "test"):  # the same order as the clean file: the same samples
        path = Path("data/interim/sequences") / f"{split}.parquet"
        assert (work / path).read_bytes() == (clean / path).read_bytes()
    assert json.loads((work / "reports/metrics/filter.json").read_text())["timestamps_converted"] == 40


def test_skipped_lines_are_printed_at_the_end_with_the_first(tmp_path, prefect_env):
    lines = csv_text(RECORDS).splitlines()
    lines[4:4] = ["just garbage", "more;garbage"]
    work = workspace(tmp_path, "inter.csv", ("\n".join(lines) + "\n").encode())
    stage(work, prefect_env, "stages.download")
    proc = stage(work, prefect_env, "stages.filter")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"skipped 2 malformed line(s) of {work / 'in' / 'inter.csv'} (first: line 5: 1 fields, expected 3)" \
        in proc.stdout


def test_a_null_in_a_sequence_is_refused_naming_user_and_position(tmp_path, prefect_env):
    (tmp_path / "in").mkdir()
    seqs = {f"u{u}": [f"i{(u + j) % 8}" for j in range(6)] for u in range(10)}
    (tmp_path / "in" / "Toy.inter.json").write_text(json.dumps(seqs))
    params = {"data": {"source": "local", "local": {"dir": str(tmp_path / "in"), "format": "sequences",
                                                    "name": "Toy"}}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    good_run(tmp_path, prefect_env)
    before = snapshot(tmp_path / "data" / "interim")
    seqs["u3"][2] = None
    (tmp_path / "in" / "Toy.inter.json").write_text(json.dumps(seqs))
    assert stage(tmp_path, prefect_env, "stages.download").returncode == 0
    proc = stage(tmp_path, prefect_env, "stages.filter")
    assert_refused_once(proc, tmp_path / "in" / "Toy.inter.json", "user 'u3', position 2: None is not an item id")
    assert snapshot(tmp_path / "data" / "interim") == before


@pytest.mark.parametrize("setting, phrase", [
    ({"train": {"lr": -0.001}}, "methods.sasrec.train.lr: Input should be greater than 0"),
    ({"backbone": {"dropout": 1.5}}, "dropout must be in [0, 1), got 1.5"),
])
def test_out_of_range_params_leave_the_previous_model_folder_as_it_was(tmp_path, prefect_env, clean_csv_run,
                                                                        setting, phrase):
    work = copy_of(clean_csv_run, tmp_path)
    folder = work / "data" / "models" / "sasrec"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text('{"from": "the previous run"}')
    (folder / "best.safetensors").write_bytes(b"previous weights")
    before = snapshot(folder)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["methods"]["sasrec"].update(setting)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(work, prefect_env, "stages.train", "sasrec")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and phrase in proc.stderr and out.count(phrase) == 1, out[-3000:]
    assert "Traceback" not in out and "| ERROR" not in out, out[-3000:]
    assert snapshot(folder) == before


def test_the_offline_fallback_is_information_not_a_failed_task(tmp_path, prefect_env):
    params = {"data": {"source": "movielens-100k", "mirrors": {"movielens-100k": ["http://127.0.0.1:9"]},
                       "timeout_s": 5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = stage(tmp_path, prefect_env, "stages.download")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "using the copy inside the recbole" in out
    assert "Failed" not in out and "| ERROR" not in out and "Traceback" not in out, out[-3000:]
    assert sorted(json.loads((tmp_path / "data/raw/manifest.json").read_text())["files"]) == \
        ["ml-100k.inter", "ml-100k.item"]
