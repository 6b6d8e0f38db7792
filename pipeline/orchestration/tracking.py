"""MLflow tracking: one experiment per dataset, one SQLite store at a fixed absolute path.

``dvc exp run --queue`` runs stages in a temporary copy of the repository inside its ``.dvc`` folder
(``tmp``, then ``exps``); the store location is resolved to the original repository root so queued experiments
land in the same store as ``dvc repro`` (docs/operations.md, "Tracking (MLflow)"). ``MLFLOW_TRACKING_URI`` overrides it.

A store that another process holds locked (an ``mlflow ui`` or ``mlflow server`` on it, a notebook, a second
``dvc exp`` worker logging) is waited for, at most ``GENREC_TRACKING_WAIT_S`` seconds per call (SQLite's own
wait, then retries with backoff). Still locked when the stage starts: it stops before doing anything. Locked
while it runs: what it logs is kept and logged at its end, so the work goes on; still locked at the end: the
stage stops with its outputs written (a training's checkpoint too), and ``dvc repro`` logs it again
(docs/operations.md, "When things fail").
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import UserError

STORE_NAME = "mlruns.db"
WAIT_ENV = "GENREC_TRACKING_WAIT_S"
DEFAULT_WAIT_S = 120.0  # long enough for another process's writes, short enough to report a lock nobody releases


def repo_root(start: Path | None = None) -> Path:
    """The project root, seen through DVC's temporary experiment copies."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for p in (here, *here.parents):
        if (p / "dvc.yaml").exists() or (p / ".dvc").is_dir():
            return p
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repo_root() / STORE_NAME}"


class TrackingLocked(UserError):
    """The MLflow store stayed locked by another process for longer than ``GENREC_TRACKING_WAIT_S``."""
    reason = "the MLflow store stayed locked"


def wait_budget() -> float:
    """Seconds a tracking call waits for a locked store (``GENREC_TRACKING_WAIT_S``, default 120)."""
    raw = os.environ.get(WAIT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_WAIT_S
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise UserError(f"{WAIT_ENV}={raw!r}: expected the seconds a stage waits for a locked MLflow store (e.g. 120)")
    return value


def store_file() -> Path | None:
    """The SQLite file of the tracking store, or None for another kind of store."""
    uri = tracking_uri()
    return Path(uri[len("sqlite:///"):].split("?")[0]) if uri.startswith("sqlite:///") else None


def is_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked", however MLflow and SQLAlchemy wrapped it."""
    seen = 0
    while exc is not None and seen < 10:
        if "database is locked" in str(exc):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def locked_message(stage: str, started: bool) -> str:
    store = store_file() or tracking_uri()
    holder = ("another process holds its write lock (an `mlflow ui` or `mlflow server` on it, a notebook, a second "
              "`dvc repro` or `dvc exp` worker logging")
    if not started:
        return (f"{store}: the MLflow store is locked: {holder}) and did not release it within {wait_budget():g} s "
                f"({WAIT_ENV}). {stage} did not start: nothing was run or written. Close or wait for the other "
                f"process (`lsof {store}` names it), then run `dvc repro` again; GENREC_TRACKING=0 runs the stages "
                "without MLflow")
    return (f"{store}: the MLflow store stayed locked for {wait_budget():g} s ({WAIT_ENV}) while {stage} logged its "
            f"results: {holder}). Nothing is lost: the stage's outputs are written (a training keeps its checkpoint, "
            "so no epoch is trained again), but DVC does not record them until the run is logged. Close or wait for "
            f"the other process (`lsof {store}` names it), then run `dvc repro` again to log it")


def retrying(call: Callable, *args, stage: str, started: bool, **kwargs):
    """``call(*args, **kwargs)``, tried again with backoff while the store is locked, for at most the tracking
    budget in all; then a :class:`TrackingLocked` error for ``stage`` (``started``: it had begun its work)."""
    budget, start, delay = wait_budget(), time.monotonic(), 0.1
    while True:
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            if not is_locked(exc):
                raise
            left = budget - (time.monotonic() - start)
            if left <= 0:
                raise TrackingLocked(locked_message(stage, started)) from None
            time.sleep(min(delay, left))
            delay = min(2 * delay, 5.0)


def _wait_for_store(stage: str) -> None:
    """Take and give back the store's write lock before anything runs (SQLite waits up to the budget for it): a
    store that stays locked stops the stage here, with nothing done."""
    store = store_file()
    if store is None or not store.exists():
        return
    try:
        con = sqlite3.connect(store, timeout=wait_budget(), isolation_level=None)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.execute("ROLLBACK")
        finally:
            con.close()
    except sqlite3.OperationalError as exc:
        if not is_locked(exc):
            raise
        raise TrackingLocked(locked_message(stage, started=False)) from None


def _create_store_once(mlflow) -> None:
    """Create the store's tables in one process at a time: two stages starting on a new store together (two `dvc exp`
    workers in a fresh clone) both ran MLflow's migrations, and one failed ("Online migration expected to match one
    row"). The other waits on an exclusive ``flock`` of the store file (SQLite's own locks are separate ones)."""
    store = store_file()
    if store is None or _has_tables(store):
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock; one stage at a time there
        return
    store.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(store, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if not _has_tables(store):
            mlflow.MlflowClient(tracking_uri()).search_experiments(max_results=1)  # MLflow creates them on first use
    finally:
        os.close(fd)  # releases the flock


def _has_tables(store: Path) -> bool:
    if not store.exists() or store.stat().st_size == 0:
        return False
    con = sqlite3.connect(store, timeout=wait_budget())
    try:
        return bool(con.execute("SELECT 1 FROM sqlite_master WHERE name = 'alembic_version'").fetchone())
    except sqlite3.OperationalError as exc:
        if is_locked(exc):
            return True  # a store someone holds locked has its tables: the wait for it comes next
        raise
    finally:
        con.close()


class _QuietLocks(logging.Filter):
    """MLflow logs each locked attempt with its traceback; the stages report a store that stays locked themselves."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "database is locked" not in record.getMessage()


def _cap_busy_wait(conn, cursor, statement: str, parameters, context, executemany):
    """MLflow sets SQLite's wait for a lock to 20 s in every session (``PRAGMA busy_timeout = 20000``); the
    stages wait the tracking budget instead, so that it bounds each call."""
    if statement.startswith("PRAGMA busy_timeout"):
        statement = f"PRAGMA busy_timeout = {int(wait_budget() * 1000)};"
    return statement, parameters


@functools.cache
def _prepare_for_locks() -> None:
    """Once per process: MLflow's lock tracebacks filtered, SQLite's wait set to the budget."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    logging.getLogger("mlflow.store.db.utils").addFilter(_QuietLocks())
    event.listen(Engine, "before_cursor_execute", _cap_busy_wait, retval=True)


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def flatten(d: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:500]
    return out


def _search(mlflow, experiment_id: str, filters: str) -> list:
    if os.environ.get("DVC_EXP_NAME"):  # inside `dvc exp run`: the runs of this experiment
        filters += f" and tags.`dvc.exp` = '{os.environ['DVC_EXP_NAME']}'"
    return mlflow.search_runs([experiment_id], filter_string=filters, order_by=["start_time DESC"], max_results=1,
                              output_format="list")


def latest_run(dataset: str, stage: str):
    """The newest run of ``stage`` (its ``dvc.stage`` tag) in the dataset's experiment, or None (tracking off, or
    no such run): the evaluate stage reads its train stage's settings from it, so no run id travels inside a DVC
    output."""
    if os.environ.get("GENREC_TRACKING", "1") == "0":
        return None
    import mlflow

    _prepare_for_locks()
    mlflow.set_tracking_uri(tracking_uri())
    _wait_for_store("the stage")
    _create_store_once(mlflow)
    tried = functools.partial(retrying, stage="the stage", started=False)
    experiment = tried(mlflow.get_experiment_by_name, dataset)
    if experiment is None:
        return None
    runs = tried(_search, mlflow, experiment.experiment_id, f"tags.`dvc.stage` = '{stage}'")
    return runs[0] if runs else None


def _group_run_id(mlflow, experiment_id: str, group: str, tags: dict) -> str:
    """The parent run of ``group`` (a method or a tokenizer): every stage run of it is nested under this one run
    in the MLflow UI. Created on first use; it holds no metrics of its own."""
    runs = _search(mlflow, experiment_id, f"tags.`genrec.group` = '{group}' and tags.`genrec.parent` = 'true'")
    if runs:
        return runs[0].info.run_id
    client = mlflow.MlflowClient()
    run = client.create_run(experiment_id, run_name=group,
                            tags={**tags, "genrec.group": group, "genrec.parent": "true"})
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, dataset: str, params: dict, group: str | None = None) -> Iterator[object]:
    """A new MLflow run for one execution of one stage, named for the stage (``train@letter``), tagged with the DVC
    stage, the git commit and the dataset, and nested under the parent run of ``group`` (the method or tokenizer
    whose stages these are). Each execution is its own run: its start and end are the stage's, and re-running a
    stage after a params edit logs the new values in a new run.

    Tracking is skipped when ``GENREC_TRACKING=0`` (unit tests of stages); then a stand-in with the
    same logging methods is yielded.
    """
    if os.environ.get("GENREC_TRACKING", "1") == "0":
        yield _NoTracking()
        return
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    _prepare_for_locks()
    mlflow.set_tracking_uri(tracking_uri())
    _wait_for_store(stage)
    _create_store_once(mlflow)
    retrying(_start_run, mlflow, stage, dataset, params, group, stage=stage, started=False)
    run = _Run(mlflow, stage)
    try:
        yield run
    except KeyboardInterrupt:
        # Ctrl-C, or SIGTERM turned into an interrupt by ``flows.run_stage``: the run ends as KILLED (without
        # this a killed stage left its run RUNNING forever in the UI); one try: a signalled stage ends promptly
        _end_run(mlflow, "KILLED", stage, retry=False)
        raise
    except BaseException as exc:
        _end_run(mlflow, "FAILED", stage, retry=False)
        if is_locked(exc):  # a call that logs without this module's retries (the registered model)
            raise TrackingLocked(locked_message(stage, started=True)) from None
        raise
    try:
        run.flush()
    except TrackingLocked:
        _end_run(mlflow, "FAILED", stage, retry=False)
        raise
    _end_run(mlflow, "FINISHED", stage)


def _start_run(mlflow, stage: str, dataset: str, params: dict, group: str | None) -> None:
    """The stage's run started and its params logged (retried whole while the store is locked)."""
    if mlflow.active_run() is not None:  # an attempt that started the run, then met the lock
        mlflow.end_run("FAILED")
    if mlflow.get_experiment_by_name(dataset) is None:
        # MLflow's default artifact root is ./mlruns of the creating process: inside a queued experiment's
        # temporary copy that folder is deleted afterwards, so anchor it at the repository root.
        try:
            mlflow.create_experiment(dataset, artifact_location=(repo_root() / "mlruns" / dataset).as_uri())
        except mlflow.exceptions.MlflowException as exc:  # created meanwhile by a parallel stage
            if is_locked(exc):
                raise
    experiment = mlflow.set_experiment(dataset)
    tags = {"git.commit": git_commit(), "dataset": dataset, "dvc.stage": stage}
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: the row of `dvc exp show` this run belongs to
        tags["dvc.exp"] = os.environ["DVC_EXP_NAME"]
    if group:
        tags["genrec.group"] = group
        tags["mlflow.parentRunId"] = _group_run_id(mlflow, experiment.experiment_id, group, tags)
    mlflow.start_run(run_name=stage, tags=tags)
    mlflow.log_params(flatten(params))


def _end_run(mlflow, status: str, stage: str, retry: bool = True) -> None:
    """End the active run as ``status``; ``retry=False`` after a failure: one try, and nothing raised."""
    active = mlflow.active_run()
    if active is None:
        return
    try:
        mlflow.end_run(status)
    except Exception as exc:
        if not retry:
            return
        if not is_locked(exc):
            raise
        # end_run forgets the run before it writes: the status is written through the client
        retrying(mlflow.MlflowClient().set_terminated, active.info.run_id, status, stage=stage, started=True)


def metric_name(key: str) -> str:
    """MLflow allows no "@" in names: recall@10 is logged as recall_at_10 (DVC files keep recall@10)."""
    return key.replace("@", "_at_")


class _Run:
    """The MLflow module, with metric names made valid for it, and a locked store waited for: a call that still
    finds it locked is kept, with every call after it, and made at the stage's end (``flush``), so that the
    stage's work goes on (a training keeps training) and nothing it logs is lost."""
    tracking = True

    def __init__(self, mlflow, stage: str = ""):
        self._mlflow, self._stage, self._kept = mlflow, stage, []

    def _call(self, name: str, *args, **kwargs):
        if self._kept:  # the store was locked: no more waiting until the end
            self._kept.append((name, args, kwargs))
            return None
        try:
            return retrying(getattr(self._mlflow, name), *args, stage=self._stage, started=True, **kwargs)
        except TrackingLocked:
            self._kept.append((name, args, kwargs))
            print(f"note: {store_file() or tracking_uri()}: the MLflow store is locked by another process; "
                  f"{self._stage} goes on and logs what it could not at its end", file=sys.stderr, flush=True)
            return None

    def flush(self) -> None:
        """Make the calls kept while the store was locked (each waits the tracking budget again)."""
        while self._kept:
            name, args, kwargs = self._kept[0]
            retrying(getattr(self._mlflow, name), *args, stage=self._stage, started=True, **kwargs)
            self._kept.pop(0)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._call("log_metrics", {metric_name(k): float(v) for k, v in metrics.items()}, step=step)

    def log_splits(self, seq_dir: Path, splits: tuple[str, ...] = ("train", "valid", "test")) -> None:
        """The filter stage's splits as the run's dataset inputs, each with its file's digest (MLflow's
        Datasets panel): two runs trained on other data show it there."""
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        for split in splits:
            path = seq_dir / f"{split}.parquet"
            if not path.exists():
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways": both are local
                warnings.simplefilter("ignore")
                source = resolve_dataset_source(str(path.resolve()))
            self._call("log_input", MetaDataset(source, name=f"{seq_dir.parent.name}/{split}", digest=digest),
                                   context={"train": "training", "valid": "validation"}.get(split, "testing"))

    def __getattr__(self, name):
        value = getattr(self._mlflow, name)
        return functools.partial(self._call, name) if callable(value) else value


class _NoTracking:
    tracking = False
    def __getattr__(self, name):
        return lambda *a, **k: None
