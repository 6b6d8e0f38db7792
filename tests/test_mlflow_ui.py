"""The MLflow compare view, opened in headless Chromium against a local `mlflow server`, shows the runs.

Keeps docs/operations.md's screenshot (reports/mlflow_compare.png, made by scripts/mlflow_compare_screenshot.py)
true: the same code starts the server on a fresh store, opens the compare page and waits for the runs.
"""
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("mlflow_compare_screenshot",
                                              REPO / "scripts" / "mlflow_compare_screenshot.py")
shot = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = shot
spec.loader.exec_module(shot)


def make_store(tmp_path: Path) -> tuple[str, dict[str, str]]:
    """A store with evaluated tiger/decor/sasrec runs and a later, unfinished tiger run."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("movielens-100k")
    evaluated = {}
    for name, ndcg, extra in [("tiger", 0.0253, {}), ("decor", 0.0257, {"method.backbone.alpha": "0.25"}),
                              ("sasrec", 0.0587, {})]:
        with mlflow.start_run(run_name=f"evaluate@{name}") as run:
            evaluated[name] = run.info.run_id
            mlflow.log_params({"method.name": name, "method.max_history": 20, **extra})
            for epoch, loss in enumerate([3.4, 1.9, 1.7], start=1):
                mlflow.log_metric("train_loss", loss, step=epoch)
            mlflow.log_metrics({"test_ndcg_at_10": ndcg, "test_recall_at_10": 2 * ndcg, "best_epoch": 3})
    with mlflow.start_run(run_name="evaluate@tiger"):  # an unfinished evaluate stage: no test metrics yet
        mlflow.log_metric("train_loss", 5.0)
    mlflow.set_tracking_uri(None)
    return uri, evaluated


def test_a_method_without_an_evaluated_run_is_named_in_the_error(tmp_path):
    uri, evaluated = make_store(tmp_path)
    experiment_id, runs = shot.latest_runs(uri, "movielens-100k", ["tiger", "decor"])
    assert runs == {"tiger": evaluated["tiger"], "decor": evaluated["decor"]}  # not the unfinished tiger
    with pytest.raises(shot.ScreenshotError, match="letter"):
        shot.latest_runs(uri, "movielens-100k", ["tiger", "letter"])
    with pytest.raises(shot.ScreenshotError, match="amazon"):
        shot.latest_runs(uri, "amazon", ["tiger"])


@pytest.mark.skipif(shot.find_chromium() is None or importlib.util.find_spec("playwright") is None,
                    reason="needs Chromium and playwright (scripts/install.sh installs them where it can)")
def test_compare_page_in_headless_chromium_shows_tiger_and_decor(tmp_path):
    uri, evaluated = make_store(tmp_path)
    out = tmp_path / "compare.png"
    result = shot.screenshot(uri, "movielens-100k", ["tiger", "decor"], out, timeout_s=120)
    assert out.stat().st_size > 20_000  # a rendered page, not a blank one
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["runs"] == {"tiger": evaluated["tiger"], "decor": evaluated["decor"]}
    assert evaluated["tiger"] in result["url"] and evaluated["sasrec"] not in result["url"]


def test_an_axis_the_runs_do_not_have_is_an_error_not_a_chart_without_it(tmp_path):
    uri, evaluated = make_store(tmp_path)
    runs = [evaluated["tiger"], evaluated["decor"]]
    shot.check_axes(uri, runs, ["method.name", "method.backbone.alpha"], ["best_epoch"])  # alpha: decor's alone
    with pytest.raises(shot.ScreenshotError, match=r"\['method.tokenizer', 'valid_ndcg_at_10'\]"):
        shot.check_axes(uri, runs, ["method.name", "method.tokenizer"], ["best_epoch", "valid_ndcg_at_10"])
    with pytest.raises(shot.ScreenshotError, match="method.tokenizer"):  # before any server or browser starts
        shot.screenshot(uri, "movielens-100k", ["tiger", "decor"], tmp_path / "compare.png", chromium="/bin/true",
                        params=["method.name", "method.tokenizer"])
