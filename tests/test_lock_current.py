"""main carries no stale results: what dvc.lock records agrees with params.yaml and the code for every stage
of the DAG, and every committed file under reports/metrics and reports/plots is an output that dvc.lock
records. Runs on a fresh clone without any data: missing data ("deleted", "not in cache") is expected
there; changed params, code or commands are not."""
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE_FOLDERS = ("pipeline/", "stages/")


def git_tracked() -> set[str]:
    out = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.splitlines())


def stale_stages(status: dict, tracked: set[str]) -> dict[str, list[str]]:
    """Per stage, what `dvc status --json` says changed in its params, code (git-tracked deps) or command."""
    tracked_dirs = {str(parent) for f in tracked for parent in Path(f).parents if str(parent) != "."} | tracked
    stale = {}
    for stage, changes in status.items():
        reasons = []
        for change in changes:
            if not isinstance(change, dict):  # "changed command", "always changed"
                reasons.append(str(change))
                continue
            for path, state in change.get("changed deps", {}).items():
                if isinstance(state, dict):
                    reasons += [f"params {key}: {v}" for key, v in state.items()]
                elif path == "params.yaml":  # a stage the lock has never recorded
                    reasons.append(f"params: {state}")
                elif path in tracked_dirs and state != "deleted":
                    reasons.append(f"code {path}: {state}")
                elif path.startswith(CODE_FOLDERS) and path not in tracked_dirs:  # code the lock names, since moved
                    reasons.append(f"code {path}: {state}")
        if reasons:
            stale[stage] = reasons
    return stale


def test_dvc_lock_agrees_with_params_and_code_for_every_stage():
    result = subprocess.run([sys.executable, "-m", "dvc", "status", "--json"], cwd=REPO, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    stale = stale_stages(json.loads(result.stdout or "{}"), git_tracked())
    assert not stale, ("dvc.lock is stale for " + "; ".join(f"{s}: {', '.join(r)}" for s, r in stale.items())
                       + ". Re-run those stages (dvc repro) and commit dvc.lock and reports/, or move a method "
                         "out of the default run (params.yaml: more_methods)")


def test_every_committed_result_is_an_output_the_lock_records():
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    recorded = {out["path"] for stage in lock.values() for out in stage.get("outs", [])}
    committed = {f for f in git_tracked() if f.startswith(("reports/metrics/", "reports/plots/"))}
    assert committed, "no committed results found: is this a git checkout?"
    orphans = sorted(committed - recorded)
    assert not orphans, f"committed results no stage of dvc.lock wrote: {orphans}; remove them or re-run their stage"


def test_the_stale_check_sees_params_and_code_but_not_missing_data():
    """The check itself, on what dvc status prints in a fresh clone and after an edit."""
    tracked = {"stages/train.py", "pipeline/models/tiger/model.py"}
    fresh_clone = {"train@tiger": [{"changed deps": {"data/interim/sequences": "deleted"}},
                                   {"changed outs": {"data/models/tiger": "not in cache"}}]}
    assert stale_stages(fresh_clone, tracked) == {}
    edited = {"train@tiger": [{"changed deps": {"stages/train.py": "modified", "pipeline/models": "modified",
                                                "params.yaml": {"methods.tiger": "modified"}}}],
              "report": ["changed command"]}
    moved = {"train@tiger": [{"changed deps": {"pipeline/models/tiger.py": "deleted"}}]}
    assert stale_stages(moved, tracked) == {"train@tiger": ["code pipeline/models/tiger.py: deleted"]}
    assert stale_stages(edited, tracked) == {
        "train@tiger": ["code stages/train.py: modified", "code pipeline/models: modified",
                        "params methods.tiger: modified"],
        "report": ["changed command"]}
    moved = {"train@tiger": [{"changed deps": {"pipeline/models/tiger.py": "deleted"}}]}
    assert stale_stages(moved, tracked) == {"train@tiger": ["code pipeline/models/tiger.py: deleted"]}


def test_every_stage_ran_the_code_there_is_now():
    """A fresh clone has no data/code, so `dvc status` cannot compare a stage's code digest: compute each
    digest here (pipeline.code_deps, as the code stage writes it) and compare it with the one dvc.lock
    recorded when the stage ran."""
    from pipeline.code_deps import all_stage_code, digest_text

    digests = {f"data/code/{name}": hashlib.md5(digest_text(files).encode()).hexdigest()
               for name, files in all_stage_code().items()}
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    ran_other_code = {}
    for stage, entry in lock.items():
        for dep in entry.get("deps", []):
            if dep["path"].startswith("data/code/") and digests.get(dep["path"]) != dep.get("md5"):
                ran_other_code[stage] = dep["path"]
    assert not ran_other_code, (f"stages that ran other code than there is now: {ran_other_code}; re-run them "
                                "(dvc repro) and commit dvc.lock and reports/")
