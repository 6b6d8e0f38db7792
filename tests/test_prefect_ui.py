"""The Prefect UI, opened in headless Chromium against a local `prefect server`, shows a stage's flow run and
its task runs (keeps reports/prefect_runs.png, made by scripts/prefect_ui_screenshot.py, true)."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("prefect_ui_screenshot", REPO / "scripts" / "prefect_ui_screenshot.py")
shot = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = shot
spec.loader.exec_module(shot)

# One stage's flow, as as_flow runs it: the flow named for the kind, the run for the stage, a task per epoch.
STAGE = """
from pipeline.orchestration.flows import as_flow, as_task
def fit(epochs):
    for epoch in range(1, epochs + 1):
        as_task(lambda: epoch, name=f"epoch {epoch}")()
    return {"epochs_run": epochs}
as_flow(fit, name="train@tiger")(2)
"""


def test_a_missing_prefect_database_is_named(tmp_path):
    with pytest.raises(shot.ScreenshotError, match="prefect.db"):
        shot.screenshot(tmp_path, ["train@tiger"], "train@tiger", tmp_path / "out", chromium="/bin/true")


@pytest.mark.skipif(shot.find_chromium() is None or importlib.util.find_spec("playwright") is None,
                    reason="needs Chromium and playwright (scripts/install.sh installs them where it can)")
def test_the_flow_run_list_shows_the_stage_and_an_absent_stage_is_an_error(tmp_path):
    from pipeline.orchestration.flows import prefect_server

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "GENREC_ORCHESTRATOR": "auto"}
    with prefect_server(env) as api:
        ran = subprocess.run([sys.executable, "-c", STAGE], cwd=REPO, env={**env, "PREFECT_API_URL": api},
                             capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    result = shot.screenshot(tmp_path / "prefect", ["train@tiger"], "train@tiger", tmp_path / "out", timeout_s=120)
    for png in (result["runs"], result["run"]):
        assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Path(png).stat().st_size > 20_000
    with pytest.raises(shot.ScreenshotError, match=r"no flow run named \['evaluate@tiger'\]"):
        shot.screenshot(tmp_path / "prefect", ["evaluate@tiger"], "train@tiger", tmp_path / "out", timeout_s=8)
