"""MLflow tracking: one experiment per dataset, one SQLite store at a fixed absolute path.

``dvc exp run --queue`` runs stages in a temporary copy of the repository inside its ``.dvc`` folder (``tmp``, then ``exps``);
the store location is resolved to the original repository root so queued experiments land in the
same store as ``dvc repro`` (docs/operations.md, "Tracking (MLflow)"). ``MLFLOW_TRACKING_URI`` overrides it.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Iterator

STORE_NAME = "mlruns.db"


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


def latest_run_id(dataset: str, stage: str) -> str | None:
    """The newest run of ``stage`` (its ``dvc.stage`` tag) in the dataset's experiment: the evaluate stage adds
    to its train stage's run this way, so no run id has to travel inside a DVC output. None when tracking
    is off or no such run exists (then evaluate opens a run of its own)."""
    if os.environ.get("GENREC_TRACKING", "1") == "0":
        return None
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(dataset)
    if experiment is None:
        return None
    filters = f"tags.`dvc.stage` = '{stage}'"
    if os.environ.get("DVC_EXP_NAME"):  # inside `dvc exp run`: the train run of this experiment
        filters += f" and tags.`dvc.exp` = '{os.environ['DVC_EXP_NAME']}'"
    runs = mlflow.search_runs([experiment.experiment_id], filter_string=filters, order_by=["start_time DESC"],
                              max_results=1, output_format="list")
    return runs[0].info.run_id if runs else None


@contextlib.contextmanager
def stage_run(stage: str, dataset: str, params: dict, run_name: str | None = None,
              run_id: str | None = None) -> Iterator[object]:
    """An MLflow run for one stage, tagged with the DVC stage, the git commit and the dataset.

    ``run_id`` continues an existing run (a method's evaluate stage adds to its train stage's run).

    Tracking is skipped when ``GENREC_TRACKING=0`` (unit tests of stages); then a stand-in with the
    same logging methods is yielded.
    """
    if os.environ.get("GENREC_TRACKING", "1") == "0":
        yield _NoTracking()
        return
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(dataset) is None:
        # MLflow's default artifact root is ./mlruns of the creating process: inside a queued experiment's
        # temporary copy that folder is deleted afterwards, so anchor it at the repository root.
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # created meanwhile by a parallel stage
            mlflow.create_experiment(dataset, artifact_location=(repo_root() / "mlruns" / dataset).as_uri())
    mlflow.set_experiment(dataset)
    try:
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=run_name or stage)
    except mlflow.exceptions.MlflowException:  # the run was deleted or lives in another store
        run = mlflow.start_run(run_name=run_name or stage)
    with run, _ended_as_killed_on_interrupt(mlflow):
        tags = {"git.commit": git_commit(), "dataset": dataset}
        if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: the row of `dvc exp show` this run belongs to
            tags["dvc.exp"] = os.environ["DVC_EXP_NAME"]
        tags["dvc.stage" if not run_id else f"dvc.stage.{stage.split('@')[0]}"] = stage
        mlflow.set_tags(tags)
        mlflow.log_params(flatten(params))
        yield _Run(mlflow)


@contextlib.contextmanager
def _ended_as_killed_on_interrupt(mlflow) -> Iterator[None]:
    """Ctrl-C, or SIGTERM turned into an interrupt by ``flows.run_stage``, ends the run as KILLED; without
    this a killed stage left its run RUNNING forever in the UI (MLflow marks other exceptions FAILED)."""
    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise


def metric_name(key: str) -> str:
    """MLflow allows no "@" in names: recall@10 is logged as recall_at_10 (DVC files keep recall@10)."""
    return key.replace("@", "_at_")


class _Run:
    """The MLflow module, with metric names made valid for it."""

    def __init__(self, mlflow):
        self._mlflow = mlflow

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items()}, step=step)

    def __getattr__(self, name):
        return getattr(self._mlflow, name)


class _NoTracking:
    def __getattr__(self, name):
        return lambda *a, **k: None
