"""Bad input and bad params through the stage commands (`python -m stages.<name>`), with Prefect on as
`dvc repro` runs them: the cases of tests/bad_input_cases.py (each a clear error or a printed repair, judged
as there), plus what Prefect could add: one message, printed once; no Prefect ERROR line; and the offline
fallback of the download reported as information, not as a failed task. One Prefect server for all."""
from __future__ import annotations

import json

import pytest
import yaml

from pipeline.orchestration.flows import prefect_server
from tests.bad_input_cases import BY_NAME, CleanRuns, command_runner, in_process, stage_env, try_case

# One case of each way a stage ends on bad input: an error in the data (a damaged download), a printed repair
# (tolerated garbage) and an error in the params (every case, and its siblings, runs without Prefect in
# tests/test_bad_input.py).
PREFECT_CASES = ["csv.gz cut off", "2 garbage lines (limit 3)", "negative learning rate"]


@pytest.fixture(scope="module")
def prefect_env(tmp_path_factory):
    env = stage_env(PREFECT_HOME=str(tmp_path_factory.mktemp("prefect")))
    env.pop("GENREC_ORCHESTRATOR", None)  # Prefect on, as `dvc repro` runs the stages
    with prefect_server(env) as api:
        yield {**env, "PREFECT_API_URL": api}


@pytest.fixture(scope="module")
def clean_runs(tmp_path_factory) -> CleanRuns:
    """The previous outputs, made in this process (the same bytes as through Prefect, in a fraction of the time):
    only the runs with the bad input go through Prefect."""
    return CleanRuns(tmp_path_factory.mktemp("clean"), in_process)


@pytest.mark.parametrize("name", PREFECT_CASES)
def test_each_case_through_prefect_says_its_message_once(tmp_path, prefect_env, clean_runs, name):
    case = BY_NAME[name]
    work = clean_runs.workspace(case, tmp_path / "work")
    verdict = try_case(case, work, command_runner(prefect_env))
    assert verdict.outcome == case.outcome, verdict.explain(case)
    out = verdict.result.stdout + verdict.result.stderr
    assert "| ERROR" not in out, verdict.explain(case)  # Prefect's ERROR line is for real crashes only
    assert out.count(case.said(work)) == 1, verdict.explain(case)  # not repeated by the flow's end


def test_the_offline_fallback_is_information_not_a_failed_task(tmp_path, prefect_env):
    params = {"data": {"source": "movielens-100k", "mirrors": {"movielens-100k": ["http://127.0.0.1:9"]},
                       "timeout_s": 5}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = command_runner(prefect_env)(tmp_path, "stages.download")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "using the copy inside the recbole" in out
    assert "Failed" not in out and "| ERROR" not in out and "Traceback" not in out, out[-3000:]
    assert sorted(json.loads((tmp_path / "data/raw/manifest.json").read_text())["files"]) == \
        ["ml-100k.inter", "ml-100k.item"]
