"""Open MLflow's compare view of methods' runs in headless Chromium, check they appear, save a screenshot.

Starts `mlflow server` on the tracking store (the project's `mlruns.db` by default) on a free local port,
picks each method's latest finished run that has test metrics (its evaluate@<method> run),
opens `#/compare-runs` with those runs, charts method, history length, best epoch, test NDCG@10 and
Recall@10 (``--params``/``--metrics``), shows only the
parameters and metrics that differ, waits until every run name and the NDCG@10 axis are on the page,
and writes a PNG. Exits non-zero, naming what is missing, when a run cannot be found or does not
show. This is what keeps the screenshot in docs/operations.md true (tests/test_mlflow_ui.py runs it on a fresh store).

    python scripts/mlflow_compare_screenshot.py --methods tiger decor --out reports/mlflow_compare.png

Needs Chromium (Debian: `apt-get install chromium`, or `--chromium <path>`) and the `playwright` package
(the `browser` extra; `scripts/install.sh` installs both where it can).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.orchestration.local_server import ServerError, local_server  # noqa: E402
from pipeline.orchestration.tracking import metric_name, tracking_uri  # noqa: E402

# Chromium on a machine without internet: no background connections, no first-run or update probes.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CHECKED_METRIC = metric_name("test_ndcg@10")
# The chart's axes: which method, how much history it reads, when its validation peaked, its test metrics.
CHART_PARAMS = ["method.name", "method.max_history"]
CHART_METRICS = ["best_epoch", CHECKED_METRIC, metric_name("test_recall@10")]


class ScreenshotError(RuntimeError):
    pass


def find_chromium(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if path := shutil.which(name):
            return path
    return None


@contextmanager
def mlflow_server(store_uri: str, timeout_s: float = 120.0) -> Iterator[str]:
    """`mlflow server` on a free local port until the block ends; yields its base URL."""
    exe = Path(sys.executable).with_name("mlflow")
    command = lambda port: [str(exe) if exe.exists() else "mlflow", "server", "--backend-store-uri", store_uri,  # noqa: E731
                            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    try:
        with local_server(command, "/health", timeout_s=timeout_s) as base:
            yield base
    except ServerError as exc:
        raise ScreenshotError(str(exc)) from None


def latest_runs(store_uri: str, experiment: str, methods: list[str]) -> tuple[str, dict[str, str]]:
    """(experiment id, {method: run id}) for each method's latest finished run with test metrics."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = [e.name for e in client.search_experiments()]
        raise ScreenshotError(f"no MLflow experiment {experiment!r} in {store_uri} (there: {names})")
    runs = {}
    for method in methods:
        found = client.search_runs([exp.experiment_id],
                                   filter_string=f"attributes.run_name = 'evaluate@{method}' "
                                                 "and attributes.status = 'FINISHED'",
                                   order_by=["attributes.start_time DESC"], max_results=50)
        with_test = [r for r in found if CHECKED_METRIC in r.data.metrics]
        if not with_test:
            raise ScreenshotError(f"experiment {experiment!r} has no finished run named 'evaluate@{method}' with "
                                  f"{CHECKED_METRIC} (run `dvc repro evaluate@{method}` first)")
        runs[method] = with_test[0].info.run_id
    return exp.experiment_id, runs


def check_axes(store_uri: str, run_ids: list[str], params: list[str], metrics: list[str]) -> None:
    """Raise ScreenshotError naming every chart axis that none of the runs logged (the chart would leave it out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri)
    logged = [client.get_run(run_id).data for run_id in run_ids]
    missing = [p for p in params if not any(p in d.params for d in logged)]
    missing += [m for m in metrics if not any(m in d.metrics for d in logged)]
    if missing:
        raise ScreenshotError(f"no chosen run logged {missing}: choose axes from their params and metrics")


def compare_url(base: str, experiment_id: str, run_ids: list[str]) -> str:
    # MLflow's route: #/compare-runs?runs=[...]&experiments=[...] (JSON lists, as its UI builds them)
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])},
                                   quote_via=urllib.parse.quote)
    return f"{base}/#/compare-runs?{query}"


def choose(page, select_index: int, names: list[str]) -> None:
    """Replace the chips of the compare view's ``select_index``-th multi-select (0: parameters, 1: metrics) by
    ``names``: MLflow's defaults are the first keys in alphabetical order, which most runs do not have."""
    select = page.locator("[class*=select-multiple]").nth(select_index)
    while select.locator("[class*=selection-item-remove]").count():
        select.locator("[class*=selection-item-remove]").first.click()
        page.wait_for_timeout(200)
    box = page.get_by_role("combobox").nth(select_index)
    for name in names:
        box.click()
        box.fill(name)
        page.wait_for_timeout(300)
        page.keyboard.press("Enter")
    page.keyboard.press("Escape")


def compact_compare_view(page, params: list[str], metrics: list[str]) -> None:
    """The parallel-coordinates chart on the chosen axes, only the rows that differ, no chat panel."""
    close = page.get_by_role("button", name="Close")
    if close.count():
        close.first.click()
    choose(page, 0, params)
    choose(page, 1, metrics)
    toggles = page.get_by_text("Show diff only", exact=True)
    for i in range(toggles.count()):
        toggles.nth(i).click()


def screenshot(store_uri: str, experiment: str, methods: list[str], out: Path, chromium: str | None = None,
               timeout_s: float = 90.0, params: list[str] = CHART_PARAMS, metrics: list[str] = CHART_METRICS) -> dict:
    """Open the compare view of ``methods``' runs; raise ScreenshotError unless all of them show."""
    browser_path = find_chromium(chromium)
    if browser_path is None:
        raise ScreenshotError("no Chromium found (apt-get install chromium, or pass --chromium <path>)")
    experiment_id, runs = latest_runs(store_uri, experiment, methods)
    check_axes(store_uri, list(runs.values()), params, metrics)
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with mlflow_server(store_uri) as base, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            url = compare_url(base, experiment_id, list(runs.values()))
            page.goto(url, timeout=max(timeout_s, 60) * 1000)  # (the load; then the wait for the runs)
            try:
                for method in methods:
                    page.get_by_text(f"evaluate@{method}", exact=True).first.wait_for(timeout=timeout_s * 1000)
                compact_compare_view(page, params, metrics)
                for axis in [*params, *metrics]:  # every chosen axis drawn (an unknown key draws none)
                    page.locator("svg text", has_text=axis).first.wait_for(timeout=timeout_s * 1000)
            except PlaywrightTimeout:
                text = page.inner_text("body")[:1500]
                raise ScreenshotError(f"the compare page {url} did not show runs {methods} and the axes "
                                      f"{[*params, *metrics]} within {timeout_s:.0f}s; page text: {text!r}") from None
            page.get_by_text("Comparing", exact=False).first.scroll_into_view_if_needed()  # back to the top
            page.wait_for_timeout(1000)  # let the chart finish drawing
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out))
        finally:
            browser.close()
    return {"url": url, "runs": runs, "screenshot": str(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", nargs="+", default=["tiger", "decor"])
    ap.add_argument("--experiment", help="MLflow experiment (default: the dataset of params.yaml)")
    ap.add_argument("--store", default=None, help="tracking URI (default: the project's store, sqlite:///<root>/mlruns.db)")
    ap.add_argument("--out", type=Path, default=Path("reports/mlflow_compare.png"))
    ap.add_argument("--chromium", default=None, help="Chromium executable (default: found on PATH)")
    ap.add_argument("--params", nargs="+", default=CHART_PARAMS, help="the chart's parameter axes")
    ap.add_argument("--metrics", nargs="+", default=CHART_METRICS, help="the chart's metric axes")
    args = ap.parse_args()
    experiment = args.experiment
    if experiment is None:
        from pipeline.config import load_params

        experiment = load_params().data.dataset_name
    try:
        result = screenshot(args.store or tracking_uri(), experiment, args.methods, args.out, args.chromium,
                            params=args.params, metrics=args.metrics)
    except ScreenshotError as exc:
        sys.exit(f"error: {exc}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
