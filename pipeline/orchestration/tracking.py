"""MLflow tracking: one experiment per dataset, one SQLite store at a fixed absolute path.

``dvc exp run --queue`` runs stages in a temporary copy of the repository inside its ``.dvc`` folder
(``tmp``, then ``exps``); the store location is resolved to the original repository root so queued experiments
land in the same store as ``dvc repro`` (docs/operations.md, "Tracking (MLflow)"). ``MLFLOW_TRACKING_URI`` overrides it.
"""
from __future__ import annotations

import contextlib
import hashlib
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

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(dataset)
    if experiment is None:
        return None
    runs = _search(mlflow, experiment.experiment_id, f"tags.`dvc.stage` = '{stage}'")
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
    import logging

    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(dataset) is None:
        # MLflow's default artifact root is ./mlruns of the creating process: inside a queued experiment's
        # temporary copy that folder is deleted afterwards, so anchor it at the repository root.
        with contextlib.suppress(mlflow.exceptions.MlflowException):  # created meanwhile by a parallel stage
            mlflow.create_experiment(dataset, artifact_location=(repo_root() / "mlruns" / dataset).as_uri())
    experiment = mlflow.set_experiment(dataset)
    tags = {"git.commit": git_commit(), "dataset": dataset, "dvc.stage": stage}
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`: the row of `dvc exp show` this run belongs to
        tags["dvc.exp"] = os.environ["DVC_EXP_NAME"]
    if group:
        tags["genrec.group"] = group
        tags["mlflow.parentRunId"] = _group_run_id(mlflow, experiment.experiment_id, group, tags)
    with mlflow.start_run(run_name=stage, tags=tags), _ended_as_killed_on_interrupt(mlflow):
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
    tracking = True

    def __init__(self, mlflow):
        self._mlflow = mlflow

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self._mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items()}, step=step)

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
            self._mlflow.log_input(MetaDataset(source, name=f"{seq_dir.parent.name}/{split}", digest=digest),
                                   context={"train": "training", "valid": "validation"}.get(split, "testing"))

    def __getattr__(self, name):
        return getattr(self._mlflow, name)


class _NoTracking:
    tracking = False
    def __getattr__(self, name):
        return lambda *a, **k: None
