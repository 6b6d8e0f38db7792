"""Open the Prefect UI of a pipeline run in headless Chromium, check its flow runs show, save screenshots.

Starts `prefect server start` on the Prefect home that the run reported to (``--prefect-home``: the folder
holding its ``prefect.db``) on a free local port, opens the flow-run list and waits until every stage named in
``--stages`` is on it, then opens the flow run of ``--run`` (its task runs: the training epochs and
validations) and writes two PNGs. Exits non-zero, naming what is missing, when a stage's run does not show.

    python scripts/prefect_ui_screenshot.py --prefect-home .prefect --stages train@tiger evaluate@tiger report \
        --run train@tiger --out-dir reports

How the committed run reported to a server: docs/operations.md, "Orchestration". Needs Chromium and the
`playwright` package, as scripts/mlflow_compare_screenshot.py.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mlflow_compare_screenshot import CHROMIUM_ARGS, ScreenshotError, find_chromium  # noqa: E402

from pipeline.orchestration.local_server import ServerError, local_server  # noqa: E402


@contextlib.contextmanager
def prefect_ui(prefect_home: Path, timeout_s: float = 120.0) -> Iterator[str]:
    """`prefect server start` on ``prefect_home``'s database until the block ends; yields the UI's base URL.
    The UI's browser code asks the API at PREFECT_UI_API_URL (default port 4200): set to the chosen port."""
    exe = Path(sys.executable).with_name("prefect")
    command = lambda port: ["env", f"PREFECT_UI_API_URL=http://127.0.0.1:{port}/api",  # noqa: E731
                            str(exe) if exe.exists() else "prefect", "server", "start", "--host", "127.0.0.1",
                            "--port", str(port)]
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    try:
        with local_server(command, "/api/health", env, timeout_s) as base:
            yield base
    except ServerError as exc:
        raise ScreenshotError(str(exc)) from None


def recorded_flow_runs(database: Path) -> set[str]:
    """The names of the flow runs in a Prefect server's SQLite database (its ``flow_run`` table), read-only."""
    with contextlib.closing(sqlite3.connect(f"{database.as_uri()}?mode=ro", uri=True)) as db:
        return {name for (name,) in db.execute("SELECT name FROM flow_run")}


def screenshot(prefect_home: Path, stages: list[str], run: str, out_dir: Path, chromium: str | None = None,
               timeout_s: float = 90.0) -> dict:
    """The flow-run list (every stage of ``stages`` on it) and the flow run of ``run`` with its task runs."""
    browser_path = find_chromium(chromium)
    if browser_path is None:
        raise ScreenshotError("no Chromium found (apt-get install chromium, or pass --chromium <path>)")
    if not (prefect_home / "prefect.db").exists():
        raise ScreenshotError(f"no Prefect database {prefect_home / 'prefect.db'}: run the pipeline with "
                              "PREFECT_API_URL set to a server whose PREFECT_HOME is this folder")
    missing = sorted((set(stages) | {run}) - recorded_flow_runs(prefect_home / "prefect.db"))
    if missing:  # said before a server and a browser start for a page that cannot show them
        raise ScreenshotError(f"no flow run named {missing} in {prefect_home / 'prefect.db'}: run those stages "
                              "with PREFECT_API_URL set to this server first")
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    shots = {"runs": out_dir / "prefect_runs.png", "run": out_dir / f"prefect_{run.replace('@', '_')}.png"}
    with prefect_ui(prefect_home) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/runs", timeout=max(timeout_s, 60) * 1000)  # (the load; then the wait for the runs)
            try:
                for stage in stages:
                    page.get_by_text(stage, exact=True).first.wait_for(timeout=timeout_s * 1000)
            except PlaywrightTimeout:
                raise ScreenshotError(f"the flow-run list {base}/runs did not show {stages} within {timeout_s:.0f}s; "
                                      f"page text: {page.inner_text('body')[:1500]!r}") from None
            page.wait_for_timeout(1500)  # the duration chart draws after the list
            page.screenshot(path=str(shots["runs"]))
            page.get_by_text(run, exact=True).first.click()
            try:
                page.get_by_text("Task runs", exact=False).first.wait_for(timeout=timeout_s * 1000)
            except PlaywrightTimeout:
                raise ScreenshotError(f"the flow run {run} did not open from {base}/runs") from None
            page.wait_for_timeout(3000)  # the timeline of its task runs
            page.screenshot(path=str(shots["run"]))
        finally:
            browser.close()
    return {"ui": base, "stages": stages, **{k: str(v) for k, v in shots.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prefect-home", type=Path, default=Path(os.environ.get("PREFECT_HOME", "~/.prefect")))
    ap.add_argument("--stages", nargs="+", default=["train@tiger", "evaluate@tiger", "report"])
    ap.add_argument("--run", default="train@tiger", help="the flow run whose page (task runs) is shot")
    ap.add_argument("--out-dir", type=Path, default=Path("reports"))
    ap.add_argument("--chromium", default=None, help="Chromium executable (default: found on PATH)")
    args = ap.parse_args()
    try:
        result = screenshot(args.prefect_home.expanduser().resolve(), args.stages, args.run, args.out_dir,
                            args.chromium)
    except ScreenshotError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
