"""A locked MLflow store (docs/operations.md, "When things fail"): another connection holds SQLite's write lock
(``BEGIN EXCLUSIVE``, as an open transaction of a notebook or a shell does) while the tracking code runs, with a short
wait (``GENREC_TRACKING_WAIT_S``). Still locked when a stage starts: it stops before doing anything. Locked for a
moment: it waits. Locked while it works: it goes on and logs at its end. Locked at its end: it stops with its outputs
kept, and a training's re-run resumes from its finished checkpoint to the same bytes (tests/failure_cases.py, shared
with scripts/failure_census.py)."""
from __future__ import annotations

import shutil
import sqlite3
import threading
import time

import pytest

from pipeline.orchestration import tracking
from tests import failure_cases


@pytest.fixture
def store(tmp_path, monkeypatch):
    db = tmp_path / "mlruns.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("GENREC_TRACKING", "1")
    monkeypatch.setenv(tracking.WAIT_ENV, "0.5")
    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("filter", "toy", {"k": 5}):  # the store and its tables, as a first stage makes them
        pass
    return db


class Lock:
    """Another connection's exclusive lock on the store, released on demand (from another thread too)."""

    def __init__(self, db):
        self.con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        self.con.execute("BEGIN EXCLUSIVE")

    def release(self) -> None:
        if self.con is not None:
            self.con.execute("ROLLBACK")
            self.con.close()
            self.con = None


def runs(db) -> list[tuple[str, str, int]]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    found = client.search_runs([client.get_experiment_by_name("toy").experiment_id],
                               "attributes.run_name = 'train@toy'")
    return [(r.info.status, r.data.params.get("lr", ""), len(client.get_metric_history(r.info.run_id, "loss")))
            for r in found]


def test_a_store_locked_when_the_stage_starts_stops_it_before_anything_runs(store):
    lock = Lock(store)
    ran = []
    t0 = time.monotonic()
    try:
        with pytest.raises(tracking.TrackingLocked) as info:
            with tracking.stage_run("train@toy", "toy", {"lr": 0.1}):
                ran.append("the body")
    finally:
        lock.release()
    message = str(info.value)
    assert message.startswith(f"{store}: the MLflow store is locked: another process holds its write lock"), message
    assert "within 0.5 s (GENREC_TRACKING_WAIT_S)" in message and "did not start: nothing was run or written" in message
    assert ran == [] and runs(store) == []
    assert time.monotonic() - t0 < 10


def test_a_store_locked_for_a_moment_is_waited_for(store, monkeypatch):
    monkeypatch.setenv(tracking.WAIT_ENV, "20")
    with tracking.stage_run("train@toy", "toy", {"lr": 0.1}) as run:
        lock = Lock(store)
        threading.Timer(1.0, lock.release).start()
        run.log_metrics({"loss": 1.0}, step=1)  # waits for the lock
        run.log_metrics({"loss": 0.5}, step=2)
    assert runs(store) == [("FINISHED", "0.1", 2)]


def test_a_store_locked_while_the_stage_works_keeps_what_it_logs_for_its_end(store, capsys):
    with tracking.stage_run("train@toy", "toy", {"lr": 0.1}) as run:
        run.log_metrics({"loss": 1.0}, step=1)
        lock = Lock(store)
        t0 = time.monotonic()
        for epoch in range(2, 6):  # the training goes on: one wait, then no more
            run.log_metrics({"loss": 1.0 / epoch}, step=epoch)
        run.set_tags({"train.device_used": "cpu"})
        assert time.monotonic() - t0 < 5
        lock.release()
    err = capsys.readouterr().err
    assert err.count("note:") == 1 and "the MLflow store is locked by another process; train@toy goes on" in err, err
    assert runs(store) == [("FINISHED", "0.1", 5)]


def test_a_store_locked_at_the_stages_end_stops_it_with_its_outputs_kept(store, tmp_path):
    output = tmp_path / "reports" / "out.json"
    lock = None
    try:
        with pytest.raises(tracking.TrackingLocked) as info:
            with tracking.stage_run("train@toy", "toy", {"lr": 0.1}) as run:
                run.log_metrics({"loss": 1.0}, step=1)
                output.parent.mkdir()
                output.write_text("{}")  # the stage's output, written before its last logs
                lock = Lock(store)
                run.log_metrics({"loss": 0.5}, step=2)
    finally:
        if lock:
            lock.release()
    message = str(info.value)
    assert "stayed locked for 0.5 s (GENREC_TRACKING_WAIT_S) while train@toy logged its results" in message, message
    assert "Nothing is lost: the stage's outputs are written" in message and "`dvc repro` again" in message
    assert output.read_text() == "{}"
    # the run's end could not be written while the store was locked: it shows as it was
    assert runs(store) == [("RUNNING", "0.1", 1)]


def test_a_training_whose_store_stays_locked_to_its_end_keeps_its_outputs_and_resumes_to_the_same_bytes(tmp_path):
    expected = failure_cases.prepare(tmp_path / "clean")
    work = tmp_path / "work"
    shutil.copytree(tmp_path / "clean", work)
    verdict = failure_cases.store_locked_to_the_end(work, expected)
    assert verdict.ok, verdict


def test_an_unusable_wait_is_named(monkeypatch):
    monkeypatch.setenv(tracking.WAIT_ENV, "soon")
    with pytest.raises(tracking.UserError, match="GENREC_TRACKING_WAIT_S='soon': expected the seconds"):
        tracking.wait_budget()
