"""Prefect flows: each DVC stage runs as one flow whose sub-steps are tasks.

A stage wraps its pipeline function with ``as_flow(fn, name="train@letter")``: the flow is the stage's kind
(``train``), its run is named for the stage and tagged with it; the steps that take time are tasks (the
training epochs and validations, the download's retried fetches), and what a stage returns is published as a
table artifact (the report: its comparison as a markdown artifact).

Prefect's result caching stays off (``NO_CACHE``): DVC alone decides what is stale. Where Prefect reports
(``GENREC_ORCHESTRATOR``, docs/operations.md, "Orchestration"):
- ``auto`` (the default): to the server ``PREFECT_API_URL`` names (``prefect server start``); without one, the
  same steps run as plain function calls: no temporary server per stage
  (its start-up: benchmarks/bench_orchestration.py);
- ``prefect``: always, with a temporary server per stage process where ``PREFECT_API_URL`` is unset;
- ``none``: never (the tests use this).
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import UserError
from pipeline.orchestration.local_server import local_server
from pipeline.runtime import distributed
from pipeline.runtime.device_failures import stage_failure

# The machines this runs on often have no internet: Prefect's telemetry would only log failures.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Flow parameters such as a `log` callable have no JSON schema; Prefect only needs it for its UI form.
warnings.filterwarnings("ignore", message=".*is not JSON serializable.*")


ORCHESTRATORS = ("auto", "prefect", "none")


def orchestrated() -> bool:
    mode = os.environ.get("GENREC_ORCHESTRATOR", "auto")
    if mode not in ORCHESTRATORS:
        raise UserError(f"GENREC_ORCHESTRATOR={mode!r}; expected one of {ORCHESTRATORS}")
    return mode == "prefect" or (mode == "auto" and bool(os.environ.get("PREFECT_API_URL")))


def as_task(fn: Callable | None = None, **options):
    """A Prefect task (no result caching) when orchestrated, else the function itself.

    A user error inside the task (a device that ran out of memory mid-epoch) ends the task run as Failed with its
    one-line reason and reaches the caller as the same exception: Prefect's traceback is for real crashes only."""
    if fn is None:
        return functools.partial(as_task, **options)
    if not orchestrated():
        return fn
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.states import Failed, State

    refused: list[UserError] = []  # the error travels beside the state: Prefect logs a state's data in full

    @functools.wraps(fn)
    def refusing(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            refused.append(exc)
            return Failed(message=failed_reason(exc))

    prefect_task = task(refusing, cache_policy=NO_CACHE, **options)

    @functools.wraps(fn)
    def called(*args, **kwargs):
        result = prefect_task(*args, **kwargs)
        if isinstance(result, State):  # the Failed state of a user error (after the task's retries, if any)
            exc = refused[-1]
            refused.clear()
            raise exc
        return result

    return called


def failed_reason(exc: UserError) -> str:
    """The one-line reason a flow or task run shows in the Prefect UI for a user error."""
    reason = getattr(exc, "reason", "the stage refused its params or input")  # a machine's failure says its own
    return f"{type(exc).__name__}: {reason} (its output says why)"


def artifact_key(stage: str) -> str:
    """Prefect's artifact keys allow lowercase letters, digits and dashes: ``train@discrec_l`` ->
    ``train-discrec-l``."""
    return re.sub(r"[^a-z0-9-]+", "-", stage.lower()).strip("-")


def publish_summary(stage: str, result) -> None:
    """The stage's summary (the first dict it returns) as a table artifact of its flow run: the figures a user
    looks for in the Prefect UI without opening a file."""
    candidates = result if isinstance(result, tuple) else (result,)
    summary = next((r for r in candidates if isinstance(r, dict)), None)
    rows = [{"figure": k, "value": v} for k, v in (summary or {}).items() if isinstance(v, (int, float, str, bool))]
    if rows:
        from prefect.artifacts import create_table_artifact

        create_table_artifact(rows, key=artifact_key(stage), description=f"{stage}: what the stage returned")


def publish_markdown(stage: str, markdown: str) -> None:
    """A markdown artifact of the running flow (the report's comparison); nothing when not orchestrated."""
    if orchestrated():
        from prefect.artifacts import create_markdown_artifact

        create_markdown_artifact(markdown, key=artifact_key(stage), description=f"{stage}: reports/comparison.md")


def as_flow(fn: Callable | None = None, **options):
    """A Prefect flow (its prints logged) when orchestrated, else the function itself.

    ``name`` is the stage (``train@letter``): the flow is named for its kind (``train``), the run for the stage,
    and the run is tagged with both, so the UI filters by kind, method or tokenizer.

    A user error (``pipeline.errors.UserError``: bad params or input) ends the flow run as Failed with a one-line
    message and reaches the caller as the same exception, which ``run_stage`` prints once: Prefect's own
    ERROR line and traceback are for real crashes only."""
    if fn is None:
        return functools.partial(as_flow, **options)
    if not orchestrated():
        return fn
    from prefect import flow, tags
    from prefect.states import Failed

    stage = options.pop("name")
    kind = stage.split("@")[0]

    @functools.wraps(fn)
    def refusing(*args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except UserError as exc:
            return Failed(message=failed_reason(exc), data=exc)
        publish_summary(stage, result)
        return result

    stage_flow = flow(refusing, name=kind, flow_run_name=stage, log_prints=True, validate_parameters=False, **options)

    @functools.wraps(fn)
    def tagged(*args, **kwargs):
        with tags(f"stage:{kind}", *([f"block:{stage.split('@', 1)[1]}"] if "@" in stage else [])):
            return stage_flow(*args, **kwargs)

    return tagged


@contextlib.contextmanager
def prefect_server(env: dict | None = None, timeout_s: float = 120.0) -> Iterator[str]:
    """`prefect server start` on a free local port for the duration of the block; yields the value for
    ``PREFECT_API_URL``. Stages pointed at it skip the temporary server (benchmarks, the e2e test)."""
    exe = Path(sys.executable).with_name("prefect")
    command = lambda port: [str(exe) if exe.exists() else "prefect", "server", "start", "--host", "127.0.0.1",  # noqa: E731
                            "--port", str(port)]
    with local_server(command, "/api/health", env, timeout_s) as base:
        yield base + "/api"


class StageTerminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a CI timeout, a scheduler) delivered as an interrupt, so that ``finally`` blocks and
    context managers run: the MLflow run ends as KILLED, temporary output folders are removed. Checkpoints
    are written atomically, so a restarted stage resumes from the last complete epoch either way."""


def _raise_terminated(signum, frame):
    raise StageTerminated(f"signal {signum}")


def run_stage(name: str, body: Callable[[], None]) -> None:
    """Run a stage's body; a user error prints its message (no traceback) and exits with status 1, and so does a
    device that ran out of memory or failed (``pipeline.runtime.device_failures``); SIGTERM and Ctrl-C stop it
    cleanly with the shell's status for the signal (143, 130)."""
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        body()
    except UserError as exc:
        print(f"\n[{name}] error: {exc}", file=sys.stderr)
        sys.exit(1)
    except FileNotFoundError as exc:
        if exc.filename is None:
            raise
        # an input another stage writes, missing (deleted, or the stage run alone): what to do, not a traceback
        print(f"\n[{name}] error: {exc.filename}: not found. It is written by an earlier stage: `dvc repro {name}` "
              "runs every stage it needs first, and `dvc checkout` restores a recorded output", file=sys.stderr)
        sys.exit(1)
    except RuntimeError as exc:
        failure = stage_failure(exc, name)  # the trainer's own message has its epoch: this is every other stage's
        if failure is None:
            raise
        print(f"\n[{name}] error: {failure}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, StageTerminated)
        print(f"\n[{name}] {'terminated' if terminated else 'interrupted'} after {time.perf_counter() - t0:.1f}s; "
              "re-run the stage to resume", file=sys.stderr)
        sys.exit(128 + (signal.SIGTERM if terminated else signal.SIGINT))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if distributed.is_main():  # under torchrun, once
        print(f"[{name}] done in {time.perf_counter() - t0:.1f}s")
