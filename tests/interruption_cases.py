"""The interruption census: each kind of stage stopped by SIGTERM (a scheduler, `kill`, a CI timeout) or SIGKILL (an
OOM kill, a machine that died) while it writes its outputs, then run again as `dvc repro` runs it; its outputs
compared with an uninterrupted run's bytes. Shared by tests/test_interruptions.py and
scripts/interruption_census.py, which prints every case with its outcome.

Each case runs in a tiny workspace (tests/conftest.py's layout): the stages before it run once, uninterrupted;
the stage is run once to record its bytes, its outputs removed, then started again and signalled the moment it
begins writing (its first temporary output appears: ``pipeline.io.atomic_path``, or its first output), and run
a third time. The verdict: the signal's exit status (143 with a one-line message for SIGTERM, killed for SIGKILL),
the re-run's bytes against the first run's, and the temporary files left behind.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.bad_input_cases import stage_env  # the stage commands' environment: this repository, no tracking, no Hub
from tests.conftest import TINY_T5, Workspace, pattern_sequences

STAGE_ENV = stage_env(GENREC_ORCHESTRATOR="none")

PARAMS = {
    "cpu_threads": 1,
    "tokenizers": {"rq": {"model": "rqvae", "hidden": [16], "code_dim": 8, "levels": 2, "codebook_size": 8,
                          "epochs": 40, "patience": 0, "batch_size": 16}},
    "methods": {
        "popularity": {"model": "popularity", "inputs": ["data/interim/sequences"]},
        "tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"], "backbone": TINY_T5,
                  "train": {"epochs": 4, "batch_size": 16, "lr": 0.01, "warmup_steps": 2, "beam_size": 10}},
    },
}
# (stage command, the outputs it writes): the stages in DAG order; a case interrupts one of them.
STAGES = {
    "embed": (["stages.embed"], ["data/processed/embeddings", "reports/metrics/embed.json"]),
    "tokenize": (["stages.tokenize", "rq"], ["data/processed/tokenizers/rq", "reports/metrics/tokenize_rq.json",
                                             "reports/plots/tokenize_rq.csv"]),
    "semantic_ids": (["stages.semantic_ids", "rq"], ["data/processed/semantic_ids/rq"]),
    "train": (["stages.train", "tiger"], ["data/models/tiger", "reports/metrics/train_tiger.json",
                                         "reports/plots/train_tiger.csv"]),
    "train_popularity": (["stages.train", "popularity"], ["data/models/popularity"]),
    "evaluate": (["stages.evaluate", "tiger"], ["data/results/tiger", "reports/metrics/evaluate_tiger.json"]),
    "evaluate_popularity": (["stages.evaluate", "popularity"], ["data/results/popularity"]),
    "report": (["stages.report"], ["reports/comparison.md", "reports/metrics/comparison.json",
                                   "reports/plots/comparison.csv"]),
}
INTERRUPTED = ["embed", "tokenize", "train", "evaluate", "report"]
SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


@dataclass
class Verdict:
    stage: str
    signal: str
    signalled_while: str  # "writing" (a temporary output had appeared) or "finished first"
    exit_status: int
    message: str  # the stage's last line on stderr after the signal
    same_bytes: bool
    leftovers: list[str]  # temporary files or folders the interrupted run left behind
    remaining: list[str]  # ...and those still there after the re-run (its writes remove their stale ones)


def digest(work: Path, outs: list[str]) -> dict[str, str]:
    files = {}
    for out in outs:
        path = work / out
        for f in sorted([path] if path.is_file() else path.rglob("*")):
            if f.is_file():
                files[str(f.relative_to(work))] = hashlib.md5(f.read_bytes()).hexdigest()
    return files


def temporaries(work: Path) -> list[str]:
    return sorted(str(p.relative_to(work)) for p in work.rglob(".*.tmp"))


def run(work: Path, stage: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *STAGES[stage][0]], cwd=work, env=STAGE_ENV,
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def workspace_with_sequences(work: Path) -> Workspace:
    """``work`` created, with tests/conftest.py's tiny splits written into it."""
    work.mkdir(parents=True, exist_ok=True)
    cwd = Path.cwd()
    os.chdir(work)
    try:
        ws = Workspace()
        ws.root = work
        ws.write_sequences()
    finally:
        os.chdir(cwd)
    return ws


def prepare(work: Path, embed: bool = True) -> None:
    """A tiny workspace with its sequences and params (tests/conftest.py's data), and every stage run once;
    ``embed=False`` writes random item vectors instead of running the text encoder (for cases after it)."""
    cwd = Path.cwd()
    ws = workspace_with_sequences(work)
    os.chdir(work)
    try:
        if not embed:
            ws.write_embeddings()
        import pyarrow as pa
        import pyarrow.parquet as pq

        from pipeline import paths
        from pipeline.io import write_json

        # what the filter stage writes beside the splits and the report reads: the stats and the interactions
        write_json({"train_samples": pq.ParquetFile(paths.SEQUENCES_DIR / "train.parquet").metadata.num_rows},
                   paths.SEQUENCE_STATS)
        seqs = pattern_sequences()
        pq.write_table(pa.table({"user_id": pa.array([u for u, s in enumerate(seqs) for _ in s], pa.int32()),
                                 "item_id": pa.array([i for s in seqs for i in s], pa.int32())}),
                       paths.SEQUENCES_DIR / "interactions.parquet")
    finally:
        os.chdir(cwd)
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    for stage in STAGES:
        if embed or stage != "embed":
            run(work, stage)


def interrupt(work: Path, stage: str, sig: str, timeout_s: float = 600) -> Verdict:
    """One case, in ``work`` (a copy of a prepared workspace)."""
    outs = STAGES[stage][1]
    expected = digest(work, outs)
    for out in outs:
        path = work / out
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    proc = subprocess.Popen([sys.executable, "-m", *STAGES[stage][0]], cwd=work, env=STAGE_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, writing = time.monotonic() + timeout_s, False
    while proc.poll() is None and time.monotonic() < deadline:
        # the first temporary output, or (a stage that writes faster than this loop looks) its first output
        if temporaries(work) or any((work / out).exists() for out in outs):
            writing = True
            break
        time.sleep(0.002)
    proc.send_signal(SIGNALS[sig])
    _, err = proc.communicate(timeout=120)
    leftovers = temporaries(work)
    run(work, stage)  # as `dvc repro` runs the stage again
    # the stage's own line (a progress bar closing may print after it), else its last
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith("[")), lines[-1] if lines else "")
    return Verdict(stage, sig, "writing" if writing else "finished first", proc.returncode, said,
                   digest(work, outs) == expected, leftovers, temporaries(work))
