"""A training killed with SIGKILL (a machine that died, an OOM kill) and run again ends in the same bytes as
an uninterrupted run: the weights, the model folder, the curve DVC records and the metrics. Anything else
changes dvc.lock, and the committed run no longer reproduces."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import paths
from tests.conftest import TINY_T5

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 12
TRAIN = {"epochs": EPOCHS, "batch_size": 16, "lr": 0.01, "weight_decay": 0.0, "warmup_steps": 2, "beam_size": 10,
         "eval_batch_size": 64, "patience": EPOCHS}
BLOCKS = {
    "sasrec": {"model": "sasrec", "inputs": ["data/interim/sequences"],
               "backbone": {"hidden": 16, "n_blocks": 1, "n_heads": 1, "dropout": 0.2}, "train": TRAIN},
    "tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"],
              "backbone": {**TINY_T5, "dropout": 0.1}, "train": TRAIN},
    # the default run's generative setting: batches of similar history lengths, drawn anew each epoch
    "tiger_grouped": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"],
                      "backbone": {**TINY_T5, "dropout": 0.1}, "train": {**TRAIN, "group_by_length": True}},
}


def outputs(method: str) -> dict[str, bytes]:
    """Every file train@<method> writes (its DVC outputs, metrics and plots), by path."""
    files = [p for p in paths.model_dir(method).rglob("*") if p.is_file()]
    files += [paths.PLOTS_DIR / f"train_{method}.csv", paths.METRICS_DIR / f"train_{method}.json"]
    return {str(p): p.read_bytes() for p in files}


def train(method: str) -> subprocess.Popen:
    env = {**os.environ, "GENREC_TRACKING": "0", "GENREC_ORCHESTRATOR": "none", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "stages.train", method], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def checkpointed_epoch(method: str) -> int:
    import json

    state = paths.model_dir(method) / "last" / "state.json"
    try:
        return json.loads(state.read_text())["epoch"]
    except (FileNotFoundError, ValueError):  # not written yet (it is replaced atomically, never half-written)
        return 0


@pytest.mark.parametrize("method", list(BLOCKS))
def test_a_training_killed_after_an_epoch_and_run_again_writes_the_same_bytes(workspace, method):
    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8)
    workspace.params({method: BLOCKS[method]}, cpu_threads=1)
    uninterrupted = train(method)
    log, _ = uninterrupted.communicate(timeout=600)
    assert uninterrupted.returncode == 0, log
    expected = outputs(method)
    shutil.rmtree(paths.model_dir(method))
    for f in (paths.PLOTS_DIR / f"train_{method}.csv", paths.METRICS_DIR / f"train_{method}.json"):
        f.unlink()

    killed = train(method)
    deadline = time.monotonic() + 600
    while checkpointed_epoch(method) < 3 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    log, _ = killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL, f"the training ended before it could be killed:\n{log}"
    stopped_at = checkpointed_epoch(method)
    assert 3 <= stopped_at < EPOCHS, stopped_at

    resumed = train(method)
    log, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, log
    assert f"resumed after epoch {stopped_at}" in log, log
    got = outputs(method)
    assert sorted(got) == sorted(expected)
    differ = [name for name in expected if got[name] != expected[name]]
    assert not differ, f"differ after a kill and a re-run: {differ}"
