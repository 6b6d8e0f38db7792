"""An output that cannot be written (a full disk, a read-only folder) stops the stage with a message naming the
file, the cause and the free space, and leaves nothing partial behind (pipeline.io.atomic_path/atomic_dir)."""
import errno
import subprocess
import sys

import pyarrow as pa
import pytest

from pipeline.errors import UserError
from pipeline.io import WriteError, atomic_dir, write_json, write_parquet


def test_a_full_disk_in_pyarrow_names_the_file_the_free_space_and_leaves_nothing(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def full(*args, **kwargs):  # what pyarrow raises on ENOSPC: a plain OSError, errno None, "[Errno 28]" in the text
        raise OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    dest = tmp_path / "sequences" / "train.parquet"
    with pytest.raises(WriteError, match=r"train.parquet: cannot write it: no space left on the device "
                                         r"\([\d,]+ MiB free on the file system of .*\).*re-run `dvc repro`") as info:
        write_parquet(pa.table({"a": [1]}), dest)
    assert isinstance(info.value, UserError) and info.value.errno == errno.ENOSPC
    assert list(dest.parent.iterdir()) == []  # no temporary file left


def test_a_read_only_folder_names_the_folder_it_could_not_write(tmp_path, monkeypatch):
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path / "out"))

    monkeypatch.setattr(tempfile, "mkdtemp", refused)
    with pytest.raises(WriteError, match=r"out/models: cannot write it: the file system is read-only"):
        with atomic_dir(tmp_path / "out" / "models"):
            pass


def test_a_read_error_inside_the_write_is_not_reported_as_a_write_failure(tmp_path):
    elsewhere = tmp_path / "inputs" / "x.json"
    with pytest.raises(FileNotFoundError):
        with atomic_dir(tmp_path / "out"):
            elsewhere.read_text()


def test_a_stage_process_prints_the_message_once_and_exits_1_without_a_traceback(tmp_path):
    code = ("import pyarrow.parquet as pq\n"
            "def full(*a, **k): raise OSError('[Errno 28] Error writing bytes to file')\n"
            "pq.write_table = full\n"
            "import pyarrow as pa\n"
            "from pipeline.io import write_parquet\n"
            "from pipeline.orchestration.flows import run_stage\n"
            "run_stage('filter', lambda: write_parquet(pa.table({'a': [1]}), 'data/interim/x.parquet'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1]),
                              "GENREC_ORCHESTRATOR": "none", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("data/interim/x.parquet: cannot write it") == 1, out.stderr


def test_json_writes_go_through_the_same_check(tmp_path, monkeypatch):
    import json

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(json, "dump", full)
    monkeypatch.setattr(json, "dumps", full)
    with pytest.raises(WriteError, match=r"m.json: cannot write it: no space left"):
        write_json({"a": 1}, tmp_path / "m.json")


def test_a_writer_killed_mid_write_leaves_a_temporary_that_the_next_write_of_that_output_removes(tmp_path):
    """SIGKILL runs no `finally`: the temporary stays beside (or, in a persisted model folder, inside) the output,
    where it would change the output's hash; the next write of the same output deletes it, and no other's."""
    folder = tmp_path / "models" / "tiger"
    folder.mkdir(parents=True)
    (folder / ".best.safetensors.abc123.tmp").write_bytes(b"half")
    (folder / ".last.def456.tmp").mkdir()
    (folder / ".other.safetensors.x.tmp").write_bytes(b"another output's")
    write_json({"a": 1}, folder / "best.safetensors")
    with atomic_dir(folder / "last"):
        pass
    assert sorted(p.name for p in folder.iterdir()) == [".other.safetensors.x.tmp", "best.safetensors", "last"]


def test_a_missing_upstream_output_names_the_file_and_the_command_not_a_traceback(tmp_path):
    code = ("from pathlib import Path\n"
            "from pipeline.orchestration.flows import run_stage\n"
            "run_stage('report', lambda: Path('data/interim/sequences/stats.json').read_text())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[1]),
                              "GENREC_ORCHESTRATOR": "none", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "data/interim/sequences/stats.json: not found" in out.stderr and "dvc repro report" in out.stderr
