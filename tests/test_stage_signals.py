"""A stage stopped by SIGTERM (kill, a CI timeout) or Ctrl-C ends cleanly: its MLflow run is marked KILLED
instead of staying RUNNING in the UI, and the process exits with the shell's status for the signal."""
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

STAGE = textwrap.dedent("""
    import time
    from pipeline.orchestration import tracking
    from pipeline.orchestration.flows import run_stage

    def body():
        with tracking.stage_run("train@toy", "toy-data", {"lr": 0.1}, group="method:toy") as run:
            run.log_metrics({"loss": 1.0}, step=1)
            print("epoch 1 logged", flush=True)
            time.sleep(120)

    run_stage("train@toy", body)
""")


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signalled_stage_ends_its_mlflow_run_as_killed(tmp_path, sig, status):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "GENREC_TRACKING": "1", "GENREC_ORCHESTRATOR": "none",
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", STAGE], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = proc.stdout.readline()  # blocks until the run exists and has logged
        assert "epoch 1 logged" in line, proc.stderr.read()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == status, err
    assert "re-run the stage to resume" in err
    assert "Traceback" not in err
    client = mlflow.tracking.MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("toy-data").experiment_id],
                               filter_string="attributes.run_name = 'train@toy'")
    assert run.info.status == "KILLED"
    assert run.data.metrics["loss"] == 1.0  # what was logged before the signal is kept
