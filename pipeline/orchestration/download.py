"""The download stage as a Prefect flow: one retried task per remote file."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import Params
from pipeline.data.download import NetworkUnavailable, RemoteFile, download, fetch_from_mirrors
from pipeline.orchestration.flows import as_flow, as_task


def _fetch_or_unreachable(rf: RemoteFile, mirrors, out, timeout):
    """fetch_from_mirrors, with "no mirror reachable at all" returned instead of raised: that is an expected
    outcome on offline machines (MovieLens then comes from the package index), so the task completes and
    the stage logs the fallback as information, instead of a failed task and its traceback."""
    try:
        return fetch_from_mirrors(rf, mirrors, out, timeout)
    except NetworkUnavailable as exc:
        return exc


def download_flow(params: Params, raw_dir: Path) -> dict:
    # Retries are for HTTP failures (a mirror answered): no connection at all is returned at once, unretried.
    fetch_task = as_task(_fetch_or_unreachable, name="fetch", retries=params.data.retries,
                         retry_delay_seconds=[2, 10, 30])

    def fetch(rf: RemoteFile, mirrors, out, timeout):
        outcome = fetch_task(rf, mirrors, out, timeout)
        if isinstance(outcome, NetworkUnavailable):
            raise outcome
        return outcome

    return as_flow(download, name="download")(params.data, raw_dir, fetch=fetch)
