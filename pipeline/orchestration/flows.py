"""Prefect flows: each DVC stage runs as one flow whose sub-steps are tasks.

A stage wraps its pipeline function with ``as_flow(fn, name=...)``; only what Prefect adds beyond a name
lives here (the download's retries).

Prefect's result caching stays off (``NO_CACHE``): DVC alone decides what is stale. Set
``GENREC_ORCHESTRATOR=none`` to run the same steps as plain function calls (no Prefect server; the
tests use this), and ``PREFECT_API_URL`` to report to a running ``prefect server start`` instead of
the temporary server Prefect otherwise starts in every process (docs/operations.md, "Orchestration").
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

from pipeline.errors import UserError
from pipeline.orchestration.local_server import local_server
from pipeline.runtime import distributed

# The machines this runs on often have no internet: Prefect's telemetry would only log failures.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# Flow parameters such as a `log` callable have no JSON schema; Prefect only needs it for its UI form.
warnings.filterwarnings("ignore", message=".*is not JSON serializable.*")


def orchestrated() -> bool:
    return os.environ.get("GENREC_ORCHESTRATOR", "prefect") != "none"


def as_task(fn: Callable | None = None, **options):
    """A Prefect task (no result caching) when orchestrated, else the function itself."""
    if fn is None:
        return functools.partial(as_task, **options)
    if not orchestrated():
        return fn
    from prefect import task
    from prefect.cache_policies import NO_CACHE

    return task(fn, cache_policy=NO_CACHE, **options)


def as_flow(fn: Callable | None = None, **options):
    """A Prefect flow (its prints logged) when orchestrated, else the function itself.

    A user error (``pipeline.errors.UserError``: bad params or input) ends the flow run as Failed with a one-line
    message and reaches the caller as the same exception, which ``run_stage`` prints once: Prefect's own
    ERROR line and traceback are for real crashes only."""
    if fn is None:
        return functools.partial(as_flow, **options)
    if not orchestrated():
        return fn
    from prefect import flow
    from prefect.states import Failed

    @functools.wraps(fn)
    def refusing(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            return Failed(message=f"{type(exc).__name__}: the stage refused its params or input (its output says why)",
                          data=exc)

    return flow(refusing, log_prints=True, validate_parameters=False, **options)


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
    """Run a stage's body; a user error prints its message (no traceback) and exits with status 1;
    SIGTERM and Ctrl-C stop it cleanly with the shell's status for the signal (143, 130)."""
    t0 = time.perf_counter()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        body()
    except UserError as exc:
        print(f"\n[{name}] error: {exc}", file=sys.stderr)
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
