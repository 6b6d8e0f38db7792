"""The failure census: how a researcher's machine fails under a stage, each class with what the stages promise for
it (docs/operations.md, "When things fail"). Shared by scripts/failure_census.py, which prints every class with its
outcome, and tests/test_failures_device.py, tests/test_failures_tracking.py, tests/test_failures_dvc.py.

- The device, mid-epoch: out of memory (``torch.OutOfMemoryError``) and a lost CUDA device (``torch.AcceleratorError``
  or a ``RuntimeError`` saying "CUDA error"), raised by the model's forward at a chosen step of a CPU training
  (``failing_forward``): the stage exits 1 with a one-line message naming the epoch, the step and the key to change,
  the checkpoint of the last complete epoch is kept, and the re-run resumes from it to the uninterrupted bytes.
- The MLflow store, locked by another connection (``BEGIN EXCLUSIVE``) before the stage starts, for a moment while it
  trains, or from its first epoch to its end (``GENREC_TRACKING_WAIT_S`` short): a stage that cannot start stops
  before doing anything; a training goes on and logs at its end; one that cannot log at its end keeps its outputs,
  and the re-run resumes from the finished checkpoint (no epoch trained again) to the same bytes, and logs it.
- DVC: a second `dvc repro` while one runs (DVC's lock refuses it; the first ends with the bytes of a run alone), and
  a queue of two experiments run by two workers sharing one cache (each ends with the bytes of its params run alone).

Each case runs in a tiny workspace (tests/conftest.py's sequences, a one-block SASRec trained for a few epochs on one
thread): the stage commands as `dvc repro` runs them, their outputs compared with an uninterrupted run's bytes.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.bad_input_cases import Result, in_process, stage_env
from tests.interruption_cases import digest as output_digest
from tests.interruption_cases import workspace_with_sequences

EPOCHS, STEPS = 4, 13  # 200 training samples of the tiny workspace in batches of 16
SASREC = {"model": "sasrec", "inputs": ["data/interim/sequences"],
          "backbone": {"hidden": 16, "n_blocks": 1, "n_heads": 1, "dropout": 0.2},
          "train": {"epochs": EPOCHS, "batch_size": 16, "lr": 0.01, "weight_decay": 0.0, "warmup_steps": 2,
                    "beam_size": 10, "eval_batch_size": 64, "patience": EPOCHS}}
PARAMS = {"cpu_threads": 1, "methods": {"sasrec": SASREC}}
TRAIN = ("stages.train", "sasrec")
OUTS = ["data/models/sasrec", "reports/metrics/train_sasrec.json", "reports/plots/train_sasrec.csv"]
CHECKPOINT = "data/models/sasrec/last/state.json"


@dataclass
class Verdict:
    case: str
    outcome: str  # "clear error" | "completed" | "traceback" | "accepted silently" | "wrong" ...
    exit_status: int
    message: str  # the stage's one-line message (or note)
    kept: str  # what was kept: the checkpoint's epoch, the outputs
    after: str  # what the re-run (or the other command) gave
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


# ----- the workspace --------------------------------------------------------------------------------------------------
def prepare(work: Path) -> dict[str, str]:
    """A tiny workspace (sequences, params.yaml) with the training run once, uninterrupted and untracked; returns
    its outputs' digests (the bytes every case must end with)."""
    prepare_sequences(work)
    (work / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    result = in_process(work, *TRAIN)
    if result.returncode:
        raise RuntimeError(f"the uninterrupted training failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return digest(work)


def digest(work: Path, outs: list[str] = OUTS) -> dict[str, str]:
    return output_digest(work, outs)


def remove_outputs(work: Path, outs: list[str] = OUTS) -> None:
    for out in outs:
        path = work / out
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def checkpointed_epoch(work: Path) -> int:
    try:
        return json.loads((work / CHECKPOINT).read_text())["epoch"]
    except (FileNotFoundError, ValueError, KeyError):  # not written yet (it is replaced atomically)
        return 0


def stage_line(text: str) -> str:
    """The stage's own message line ("[train@sasrec] error: ..."), else its last line."""
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return next((line for line in lines if line.startswith("[") and "] error:" in line), lines[-1] if lines else "")


# ----- the device -----------------------------------------------------------------------------------------------------
def device_errors():
    """The device failures a training meets, as PyTorch raises them (the CUDA ones made on a CPU)."""
    import torch

    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
                                 "79.11 GiB of which 6.44 MiB is free. Including non-PyTorch memory, this process "
                                 "has 79.10 GiB memory in use.")
    lost = getattr(torch, "AcceleratorError", RuntimeError)(
        "CUDA error: unspecified launch failure\nCUDA kernel errors might be asynchronously reported at some other "
        "API call, so the stacktrace below might be incorrect.")
    return {"out of GPU memory mid-epoch": (oom, "out of memory on cpu in epoch 3, step 5 of 13 at "
                                                 "methods.sasrec.train.batch_size 16"),
            "CUDA device lost mid-epoch": (lost, "the cpu device failed in epoch 3, step 5 of 13 (CUDA error: "
                                                 "unspecified launch failure)"),
            "no CUDA-capable device mid-epoch": (RuntimeError("CUDA error: no CUDA-capable device is detected"),
                                                 "the cpu device failed in epoch 3, step 5 of 13")}


@contextlib.contextmanager
def failing_forward(exc: BaseException, at_call: int):
    """The training step's forward (``pipeline.training.trainer._LossCall``) raises ``exc`` at call ``at_call``."""
    from pipeline.training import trainer

    original = trainer._LossCall.forward
    calls = itertools.count(1)

    def forward(self, batch, loss):
        if next(calls) == at_call:
            raise exc
        return original(self, batch, loss)

    trainer._LossCall.forward = forward
    try:
        yield
    finally:
        trainer._LossCall.forward = original


def device_case(work: Path, name: str, expected: dict[str, str]) -> Verdict:
    """One device failure at epoch 3, step 5, in ``work`` (a copy of a prepared workspace); then the re-run."""
    exc, phrase = device_errors()[name]
    remove_outputs(work)
    with failing_forward(exc, at_call=2 * STEPS + 5):
        failed = in_process(work, *TRAIN)
    kept = checkpointed_epoch(work)
    again = in_process(work, *TRAIN)
    message = stage_line(failed.stderr)
    problems = [p for p, bad in [
        (f"exit status {failed.returncode}, not 1", failed.returncode != 1),
        ("a traceback", "Traceback" in failed.stdout + failed.stderr),
        (f"the message does not say {phrase!r}", phrase not in message),
        ("the message does not name the checkpoint of epoch 2", "the checkpoint of epoch 2" not in message),
        (f"the checkpoint is of epoch {kept}, not 2", kept != 2),
        (f"the re-run exited {again.returncode}", again.returncode != 0),
        ("the re-run did not resume after epoch 2", "resumed after epoch 2" not in again.stdout),
        ("the re-run's bytes differ from an uninterrupted run's", digest(work) != expected)] if bad]
    return Verdict(name, "clear error" if not problems else "wrong", failed.returncode, message,
                   f"the checkpoint of epoch {kept}", "resumed after epoch 2, the same bytes" if not problems else "",
                   problems)


# ----- the MLflow store -----------------------------------------------------------------------------------------------
def tracked_env(work: Path, wait_s: float) -> dict:
    return stage_env(GENREC_ORCHESTRATOR="none", GENREC_TRACKING="1", MLFLOW_TRACKING_URI=f"sqlite:///{store(work)}",
                     GENREC_TRACKING_WAIT_S=str(wait_s), PYTHONUNBUFFERED="1")


def store(work: Path) -> Path:
    return work / "mlruns.db"


@contextlib.contextmanager
def locked(db: Path):
    """Another process's write lock on the store (as an open transaction of a notebook or a shell holds it)."""
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        con.execute("ROLLBACK")
        con.close()


def start_training(work: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *TRAIN], cwd=work, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_training(work: Path, env: dict) -> Result:
    proc = subprocess.run([sys.executable, "-m", *TRAIN], cwd=work, env=env, capture_output=True, text=True,
                          timeout=600)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def tracked_runs(work: Path) -> list[dict]:
    """The store's train@sasrec runs, oldest first: status and how many epochs of training loss each logged."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{store(work)}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "attributes.run_name = 'train@sasrec'",
                              order_by=["attributes.start_time ASC"]) if experiments else []
    return [{"status": r.info.status,
             "epochs": len(client.get_metric_history(r.info.run_id, "train_loss"))} for r in runs]


def init_store(work: Path) -> None:
    """An MLflow store with its tables (the stages' first run creates it; a case locks it before)."""
    code = "import mlflow, sys; mlflow.MlflowClient(sys.argv[1]).search_experiments()"
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{store(work)}"], check=True, capture_output=True,
                   env=stage_env())


def wait_for_epoch(proc: subprocess.Popen, work: Path, epoch: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while checkpointed_epoch(work) < epoch and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)


def store_locked_at_start(work: Path, expected: dict[str, str], wait_s: float = 1) -> Verdict:
    """The store locked before the stage starts, for longer than the wait: it stops before doing anything."""
    init_store(work)
    remove_outputs(work)
    env = tracked_env(work, wait_s)
    t0 = time.monotonic()
    with locked(store(work)):
        failed = run_training(work, env)
    waited = time.monotonic() - t0
    wrote = [out for out in OUTS if (work / out).exists()]
    again = run_training(work, env)
    runs = tracked_runs(work)
    message = stage_line(failed.stderr)
    problems = [p for p, bad in [
        (f"exit status {failed.returncode}, not 1", failed.returncode != 1),
        ("a traceback", "Traceback" in failed.stdout + failed.stderr),
        ("the message does not say the stage did not start", "did not start: nothing was run or written"
         not in message or str(store(work)) not in message),
        (f"it wrote {wrote}", bool(wrote)),
        (f"the re-run exited {again.returncode}", again.returncode != 0),
        ("the re-run's bytes differ from an uninterrupted run's", digest(work) != expected),
        (f"the store holds {runs}, not one finished run of {EPOCHS} epochs",
         runs != [{"status": "FINISHED", "epochs": EPOCHS}])] if bad]
    return Verdict("MLflow store locked when the stage starts", "clear error" if not problems else "wrong",
                   failed.returncode, message, f"nothing written (stopped after {waited:.0f} s)",
                   "re-run: the same bytes, one finished run" if not problems else "", problems)


def store_locked_for_a_moment(work: Path, expected: dict[str, str], wait_s: float = 30, hold_s: float = 2) -> Verdict:
    """The store locked for ``hold_s`` after the first epoch (an `mlflow ui` query, another stage's write): the
    training waits for it and logs every epoch."""
    init_store(work)
    remove_outputs(work)
    proc = start_training(work, tracked_env(work, wait_s))
    wait_for_epoch(proc, work, 1)
    with locked(store(work)):
        time.sleep(hold_s)
    out, err = proc.communicate(timeout=600)
    runs = tracked_runs(work)
    problems = [p for p, bad in [
        (f"exit status {proc.returncode}, not 0", proc.returncode != 0),
        ("a traceback", "Traceback" in out + err),
        ("the bytes differ from an uninterrupted run's", digest(work) != expected),
        (f"the store holds {runs}, not one finished run of {EPOCHS} epochs",
         runs != [{"status": "FINISHED", "epochs": EPOCHS}])] if bad]
    return Verdict(f"MLflow store locked for {hold_s:g} s mid-training", "completed" if not problems else "wrong",
                   proc.returncode, stage_line(out), "every epoch logged", "", problems)


def store_locked_to_the_end(work: Path, expected: dict[str, str], wait_s: float = 1) -> Verdict:
    """The store locked from the first epoch until the stage ends: it trains on, keeps what it logs, and stops at its
    end with its outputs written; the re-run resumes from the finished checkpoint and logs the run."""
    init_store(work)
    remove_outputs(work)
    env = tracked_env(work, wait_s)
    proc = start_training(work, env)
    wait_for_epoch(proc, work, 1)
    with locked(store(work)):
        out, err = proc.communicate(timeout=600)
    if os.environ.get("FAILURE_CASES_VERBOSE"):
        print(err)
    kept = digest(work) == expected
    again = run_training(work, env)
    runs = tracked_runs(work)
    message = stage_line(err)
    problems = [p for p, bad in [
        (f"exit status {proc.returncode}, not 1", proc.returncode != 1),
        ("a traceback", "Traceback" in out + err),
        ("no note that the store is locked", "note:" not in err or "MLflow store is locked" not in err),
        ("the message does not say nothing is lost", "Nothing is lost" not in message),
        ("the outputs were not all written", not kept),
        (f"the re-run exited {again.returncode}", again.returncode != 0),
        (f"the re-run did not resume after epoch {EPOCHS}", f"resumed after epoch {EPOCHS}" not in again.stdout),
        ("the re-run's bytes differ from an uninterrupted run's", digest(work) != expected),
        # the first run's end cannot be written while the store is locked: it stays RUNNING in the UI
        (f"the store holds {runs}, not the locked run then a finished one",
         len(runs) != 2 or runs[-1]["status"] != "FINISHED")] if bad]
    return Verdict("MLflow store locked from the first epoch to the end", "clear error" if not problems else "wrong",
                   proc.returncode, message, "the outputs (and the finished checkpoint)",
                   f"re-run: resumed after epoch {EPOCHS}, the same bytes, logged" if not problems else "", problems)


# ----- DVC ------------------------------------------------------------------------------------------------------------
# The stage's command waits at a gate while the file `hold` exists (saying so with the file `waiting`), so that a
# second command starts while the first runs its stage, on any machine's speed. Without `hold` it passes at once.
GATE = ("import pathlib, time\n"
        "deadline = time.monotonic() + 300\n"
        "if pathlib.Path('hold').exists():\n"
        "    pathlib.Path('waiting').touch()\n"
        "while pathlib.Path('hold').exists() and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n")
DVC_YAML = {"stages": {"train": {
    "cmd": "python gate.py && python -m stages.train sasrec",
    "deps": ["data/interim/sequences"],
    "params": ["seed", "cpu_threads", "methods.sasrec"],
    "outs": [{"data/models/sasrec": {"persist": True}}, {"reports/plots/train_sasrec.csv": {"cache": False}},
             {"reports/metrics/train_sasrec.json": {"cache": False}}]}}}


def dvc_env(tracked: bool = False) -> dict:
    """The stage commands' environment (this repository importable, no Hub; MLflow into the workspace's store where
    ``tracked``, else none) with the venv's python first on PATH, as `dvc repro` finds it in an activated
    environment."""
    env = stage_env(GENREC_ORCHESTRATOR="none", GENREC_TRACKING="1" if tracked else "0")
    env.pop("MLFLOW_TRACKING_URI", None)  # the store at the workspace's root, seen from DVC's experiment copies
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def dvc(work: Path, *args: str, timeout_s: float = 600, tracked: bool = False) -> Result:
    exe = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(exe), *args], cwd=work, env=dvc_env(tracked), capture_output=True, text=True,
                          timeout=timeout_s)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def dvc_workspace(work: Path, epochs: int = EPOCHS) -> Path:
    """A DVC project of one stage (train@sasrec as dvc.yaml runs it, after the gate) on the tiny workspace, committed
    to git."""
    prepare_sequences(work)
    (work / "gate.py").write_text(GATE)
    train = {**SASREC["train"], "epochs": epochs, "patience": epochs}
    # the method's own seed: the key `dvc exp run -S methods.sasrec.seed=...` sets
    params = {"seed": 2025, **PARAMS, "methods": {"sasrec": {**SASREC, "seed": 2025, "train": train}}}
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (work / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False))
    git = ["git", "-c", "user.name=census", "-c", "user.email=census@localhost"]
    for command in (["git", "init", "-q"], [str(Path(sys.executable).with_name("dvc")), "init", "-q"],
                    ["git", "add", "-A"], [*git, "commit", "-qm", "a tiny workspace"]):
        subprocess.run(command, cwd=work, env=dvc_env(), check=True, capture_output=True)
    return work


def prepare_sequences(work: Path) -> None:
    workspace_with_sequences(work)


def second_repro(clean: Path, tmp: Path) -> Verdict:
    """`dvc repro` in a copy of ``clean`` alone, then in another copy a second `dvc repro` started while the first
    runs its stage (held at the gate until the second has ended): DVC's lock refuses the second, and the first ends
    with the bytes of the run alone."""
    alone, work = tmp / "alone", tmp / "concurrent"
    shutil.copytree(clean, alone)
    shutil.copytree(clean, work)
    result = dvc(alone, "repro")
    if result.returncode:
        return Verdict("second `dvc repro` in the workspace", "wrong", result.returncode, stage_line(result.stderr),
                       "", "", [f"`dvc repro` alone failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"])
    expected = digest(alone)
    (work / "hold").touch()  # the first waits at the gate
    first = subprocess.Popen([str(Path(sys.executable).with_name("dvc")), "repro"], cwd=work, env=dvc_env(),
                             text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (work / "waiting").exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    second = dvc(work, "repro")
    if os.environ.get("FAILURE_CASES_VERBOSE"):
        print(second.stdout, second.stderr)
    still_running = first.poll() is None
    (work / "hold").unlink()
    out, err = first.communicate(timeout=600)
    message = " ".join(line.strip() for line in second.stderr.splitlines() if line.strip()).replace(str(work), ".")
    # DVC refuses with its repository lock ("Unable to acquire lock") or, while the first runs its stage command,
    # with the outputs' lock ("... is busy, it is being blocked by: (PID n): dvc repro"): either names the repair
    refused = "Unable to acquire lock" in message or f"(PID {first.pid})" in message
    problems = [p for p, bad in [
        ("the first `dvc repro` had ended before the second finished", not still_running),
        (f"the second exited {second.returncode}", second.returncode == 0),
        ("the second does not say DVC's lock refused it", not refused),
        ("a traceback", "Traceback" in second.stdout + second.stderr + out + err),
        (f"the first exited {first.returncode}", first.returncode != 0),
        ("the first's bytes differ from a run alone", digest(work) != expected),
        ("`dvc status` is not clean after the first", "up to date" not in dvc(work, "status").stdout)] if bad]
    return Verdict("second `dvc repro` in the workspace", "clear error" if not problems else "wrong",
                   second.returncode, message, "the first run, untouched",
                   "the first: the bytes of a run alone, dvc status clean" if not problems else "", problems)


def queue_two_workers(clean: Path, tmp: Path, seeds: tuple[int, ...] = (1, 2), tracked: bool = False) -> Verdict:
    """Two queued experiments (``methods.sasrec.seed``) run by `dvc exp run --run-all --jobs 2`: two workers, one
    cache (and with ``tracked``, one MLflow store). Each experiment, applied, has the bytes of its params trained
    alone (and its finished run in the store)."""
    work = tmp / "queue"
    shutil.copytree(clean, work)
    expected = {}
    for seed in seeds:
        alone = tmp / f"alone-seed{seed}"
        shutil.copytree(clean, alone)
        params = yaml.safe_load((alone / "params.yaml").read_text())
        params["methods"]["sasrec"]["seed"] = seed
        (alone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        in_process(alone, *TRAIN)
        expected[seed] = digest(alone)
    for seed in seeds:
        queued = dvc(work, "exp", "run", "--queue", "--name", f"seed{seed}", "-S", f"methods.sasrec.seed={seed}")
        if queued.returncode:
            return Verdict("`dvc exp run --run-all --jobs 2`", "wrong", queued.returncode, stage_line(queued.stderr),
                           "", "", [f"queueing failed: {queued.stderr[-2000:]}"])
    t0 = time.monotonic()
    ran = dvc(work, "exp", "run", "--run-all", "--jobs", "2", tracked=tracked)
    took = time.monotonic() - t0
    problems = [f"`dvc exp run --run-all --jobs 2` exited {ran.returncode}:\n{ran.stdout[-2000:]}{ran.stderr[-2000:]}"
                ] if ran.returncode else []
    status = dvc(work, "queue", "status").stdout
    if "Failed" in status:  # `dvc exp run --run-all` exits 0 when a queued experiment fails: the queue says so
        problems.append(f"a queued experiment failed:\n{status}")
    for seed in seeds:
        applied = dvc(work, "exp", "apply", f"seed{seed}")
        if applied.returncode:
            problems.append(f"`dvc exp apply seed{seed}` exited {applied.returncode}: {applied.stderr[-500:]}")
        elif digest(work) != expected[seed]:
            problems.append(f"experiment seed{seed}: its outputs differ from the same params trained alone")
    if "Traceback" in ran.stdout + ran.stderr:
        problems.append("a traceback")
    if tracked:
        runs = [r["status"] for r in tracked_runs(work)]
        if runs != ["FINISHED"] * len(seeds):
            problems.append(f"the store holds the runs {runs}, not {len(seeds)} finished ones")
    return Verdict(f"`dvc exp run --run-all --jobs 2` (two workers, one cache{', one MLflow store' * tracked})",
                   "completed" if not problems else "wrong", ran.returncode,
                   f"{len(seeds)} experiments in {took:.0f} s", "both experiments in the cache",
                   "each applied: the bytes of its params alone" if not problems else "", problems)


# ----- under Prefect --------------------------------------------------------------------------------------------------
FAILING_TRAINING = """
import runpy, sys
from tests import failure_cases as fc
exc, _ = fc.device_errors()[sys.argv[1]]
sys.argv = ["stages.train", "sasrec"]
with fc.failing_forward(exc, 2 * fc.STEPS + 5):
    runpy.run_module("stages.train", run_name="__main__")
"""
PREFECT_RUNS = """
import asyncio, json
from prefect.client.orchestration import get_client

async def runs():
    async with get_client() as client:
        tasks = await client.read_task_runs()
        flows = await client.read_flow_runs()
        return {"tasks": sorted([t.name, t.state_name] for t in tasks),
                "flows": [[f.name, f.state_name, f.state.message] for f in flows]}

print(json.dumps(asyncio.run(runs())))
"""


def device_case_under_prefect(work: Path, api_url: str, prefect_home: Path) -> Verdict:
    """Out of memory at epoch 3, step 5, with the stage run as a Prefect flow (``PREFECT_API_URL``): the epochs are
    tasks named "epoch N" and "validate epoch N", the failed epoch's task and the flow end Failed with the class's
    reason, and the stage prints its message once, without a traceback."""
    name = "out of GPU memory mid-epoch"
    remove_outputs(work)
    env = stage_env(PREFECT_HOME=str(prefect_home), PREFECT_API_URL=api_url)
    env.pop("GENREC_ORCHESTRATOR", None)  # Prefect on, as `dvc repro` runs the stages with a server
    failed = subprocess.run([sys.executable, "-c", FAILING_TRAINING, name], cwd=work, env=env, capture_output=True,
                            text=True, timeout=600)
    found = subprocess.run([sys.executable, "-c", PREFECT_RUNS], env=env, capture_output=True, text=True, timeout=120)
    runs = json.loads(found.stdout) if found.returncode == 0 else {"tasks": [], "flows": []}
    out = failed.stdout + failed.stderr
    message = stage_line(failed.stderr)
    reason = "DeviceOutOfMemory: the device ran out of memory (its output says why)"
    tasks = [["epoch 1", "Completed"], ["epoch 2", "Completed"], ["epoch 3", "Failed"],
             ["validate epoch 1", "Completed"], ["validate epoch 2", "Completed"]]
    problems = [p for p, bad in [
        (f"exit status {failed.returncode}, not 1", failed.returncode != 1),
        ("a traceback", "Traceback" in out),
        ("the message is not printed once", out.count(device_errors()[name][1]) != 1),
        (f"the task runs are {runs['tasks']}, not {tasks}", runs["tasks"] != tasks),
        (f"the flow runs are {runs['flows']}", runs["flows"] != [["train@sasrec", "Failed", reason]]),
        (f"the checkpoint is of epoch {checkpointed_epoch(work)}, not 2", checkpointed_epoch(work) != 2)] if bad]
    return Verdict(f"{name}, through Prefect", "clear error" if not problems else "wrong", failed.returncode, message,
                   f"the checkpoint of epoch {checkpointed_epoch(work)}",
                   "tasks epoch 1, 2 Completed, epoch 3 Failed; the flow Failed" if not problems else "", problems)
