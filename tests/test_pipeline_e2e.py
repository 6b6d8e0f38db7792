"""`dvc repro` on a fresh copy of the repository, with every stage, on a tiny training budget.

Runs the real stages (Prefect flows, MLflow into the copy's own `mlruns.db`) on the embedded default dataset
(Amazon Scientific, data/embedded) with every method of the default run. Then checks
that a second run is a no-op, that edits invalidate exactly the stages they should, and that a queued
`dvc exp run` sweep shows in `dvc exp show` and lands in the same MLflow store.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from pipeline.orchestration.flows import prefect_server

REPO = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "data", "mlruns.db", "mlruns", ".pytest_cache", ".benchmarks", "reports", "dvc.lock"}

# Small enough for CI on two cores; the stage code paths are the same as with the defaults.
TINY = {
    "embed": {"max_seq_length": 32},
    "tokenizers": {"rqvae": {"epochs": 3, "hidden": [64], "code_dim": 16},
                   "letter": {"epochs": 3, "hidden": [64], "code_dim": 16}},
    "methods": {"sasrec": {"train": {"epochs": 1, "samples_per_epoch": 512, "batch_size": 128}}},
    # CI time: the test beam search over 8,317 users and the report's intervals are the tiny run's largest costs
    "evaluate": {"beam_size": 10},
    "report": {"bootstrap_resamples": 199},
}
TINY_GENERATIVE = {
    "backbone": {"d_model": 32, "num_layers": 1, "num_decoder_layers": 1, "num_heads": 2, "d_kv": 16, "d_ff": 64},
    "train": {"epochs": 1, "samples_per_epoch": 256, "batch_size": 64, "max_eval_samples": 64},
}
# Every method of the default run; the ablation rows (more_methods) run the same code with other switches.
KEPT_METHODS = ("popularity", "sasrec", "tiger", "decor", "etegrec", "letter", "discrec_t", "discrec_l")
GENERATIVE = ("tiger", "decor", "etegrec", "letter", "discrec_t", "discrec_l")
TOKENIZERS = ("rqvae", "letter")  # the default run's tokenizers (rqvae_e32, rqvae_sasrec: more_tokenizers)
USERS, ITEMS, INTERACTIONS = 8317, 4344, 58492  # the embedded dataset (data/embedded/amazon-scientific/SOURCE.md)


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
    shutil.copytree(REPO / "data" / "embedded", dest / "data" / "embedded")  # the default dataset (git-tracked)
    (dest / "data" / "local").mkdir(parents=True)
    (dest / "data" / "local" / ".gitkeep").touch()
    params = merge(yaml.safe_load((dest / "params.yaml").read_text()), TINY)
    assert tuple(params["methods"]) == KEPT_METHODS, "the default run's methods changed: update this test"
    params["methods"] = {name: merge(block, TINY_GENERATIVE) if name in GENERATIVE else block
                         for name, block in params["methods"].items()}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


def dvc(args, cwd, env):
    exe = Path(sys.executable).with_name("dvc")
    started = time.monotonic()
    out = subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)
    print(f"dvc {' '.join(args)}: {time.monotonic() - started:.1f} s", file=sys.stderr)  # (where the minutes go)
    return out


def would_run(work, env) -> set[str]:
    out = dvc(["repro", "--dry"], work, env)
    assert out.returncode == 0, out.stdout + out.stderr
    return set(re.findall(r"Running stage '([^']+)'", out.stdout))


def prefect_post(api: str, path: str) -> list[dict]:
    request = urllib.request.Request(f"{api}/{path}", data=b"{}", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def ran(out) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", out.stdout))


def mlflow_runs(work: Path, experiment: str = "amazon-scientific") -> list:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{work / 'mlruns.db'}")
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r} in {work / 'mlruns.db'}"
    assert exp.artifact_location.startswith((work / "mlruns").as_uri()), exp.artifact_location
    return client.search_runs([exp.experiment_id], max_results=1000)


def edit_params(work: Path, change: dict) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    (work / "params.yaml").write_text(yaml.safe_dump(merge(params, change), sort_keys=False))


def restore_baseline(work: Path, env: dict) -> None:
    """Back to the committed baseline: params, lock and the git-tracked metrics/plots, then the cached outputs."""
    subprocess.run(["git", "checkout", "--", "."], cwd=work, check=True, env=env)
    assert dvc(["checkout", "-q"], work, env).returncode == 0
    assert "up to date" in dvc(["status"], work, env).stdout


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_nothing_and_edits_invalidate_only_their_stages(tmp_path):
    work = copy_repo(tmp_path / "repo")
    # The stages run `python -m stages.<name>`: put this interpreter's environment first on PATH, as
    # `. .venv/bin/activate` does for a user, so CI (which calls .venv/bin/python directly) finds it.
    venv_bin = str(Path(sys.executable).parent)
    # No MLFLOW_TRACKING_URI: the stages must find the store at the copy's root by themselves, also from
    # the temporary directories of queued experiments.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PATH": venv_bin + os.pathsep + os.environ.get("PATH", ""),
                "VIRTUAL_ENV": str(Path(sys.executable).parents[1]),
                "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"})
    # Through a running Prefect server (docs/operations.md, "Orchestration"): every stage must show as a completed flow.
    env["PREFECT_HOME"] = str(tmp_path / "prefect")
    with prefect_server(env) as api:
        first = dvc(["repro"], work, {**env, "PREFECT_API_URL": api})
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
        flows = {f["id"]: f["name"] for f in prefect_post(api, "flows/filter")}
        runs = runs_in_prefect = prefect_post(api, "flow_runs/filter")
        completed = {r["name"] for r in runs if r["state_type"] == "COMPLETED"}
        tasks = [t["name"] for t in prefect_post(api, "task_runs/filter")]
        artifacts = {a["key"]: a for a in prefect_post(api, "artifacts/filter")}
    # one flow per stage kind, its runs named for the stage and tagged with kind and block
    assert {"download", "filter", "embed", "tokenize", "train", "evaluate", "report", "explore"} <= set(flows.values())
    assert {"download", "filter", "embed", "report", "explore"} <= completed, completed
    assert {f"{stage}@{t}" for stage in ("tokenize", "semantic_ids") for t in TOKENIZERS} <= completed, completed
    assert {f"{stage}@{m}" for stage in ("train", "evaluate") for m in KEPT_METHODS} <= completed, completed
    tiger_run = next(r for r in runs if r["name"] == "train@tiger")
    assert {"stage:train", "block:tiger"} <= set(tiger_run["tags"]), tiger_run["tags"]
    # the time-consuming steps are tasks: every training epoch and validation of every trained method
    epochs = TINY_GENERATIVE["train"]["epochs"]
    assert tasks.count("epoch 1") >= len(KEPT_METHODS) - 1 and f"validate epoch {epochs}" in tasks, sorted(set(tasks))
    assert artifacts["report"]["type"] == "markdown" and "# Test metrics" in artifacts["report"]["data"]
    assert artifacts["train-tiger"]["type"] == "table", sorted(artifacts)
    metrics = work / "reports" / "metrics"
    stats = json.loads((metrics / "filter.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (USERS, ITEMS, INTERACTIONS)
    for t in TOKENIZERS:
        assert json.loads((metrics / f"semantic_ids_{t}.json").read_text())["unique_ids"] is True
    for method in KEPT_METHODS:
        result = json.loads((metrics / f"evaluate_{method}.json").read_text())
        assert result["users"] == USERS and 0.0 <= result["ndcg@10"] <= 1.0, result
    for method in GENERATIVE:
        assert json.loads((metrics / f"evaluate_{method}.json").read_text())["invalid@10"] == 0.0
    assert "composition_active_l1" in (work / "reports" / "plots" / "train_decor.csv").read_text()
    comparison = (work / "reports" / "comparison.md").read_text()
    assert all(f"| {m} |" in comparison for m in KEPT_METHODS) and "N@10 vs tiger" in comparison
    # the slice tables: every family partitions the test users, for every method (prefix: the generative ones)
    by_slice = json.loads((metrics / "slices.json").read_text())["families"]
    assert (set(by_slice) == {"popularity", "history", "prefix"}
            and set(by_slice["prefix"]["methods"]) == set(GENERATIVE))
    for family, block in by_slice.items():
        for method, row in block["methods"].items():
            assert sum(cell["users"] for cell in row.values()) == USERS, (family, method)
    assert "**By target popularity in the training split**" in comparison
    assert (work / "reports" / "plots" / "slices.svg").read_text().startswith("<svg")
    # the explorer: a page per tokenizer, one for ETEGRec's learned IDs and one for DECOR's composition
    # (ETEGRec's page exists when its training changed its IDs, which one tiny epoch may not do)
    pages = {p.stem for p in (work / "reports" / "explorer").glob("*.html")}
    learned = (work / "data" / "models" / "etegrec" / "semantic_ids.parquet").read_bytes() != \
        (work / "data" / "processed" / "semantic_ids" / "rqvae" / "ids.parquet").read_bytes()
    assert pages == {"index", *TOKENIZERS, "decor", *(["etegrec"] if learned else [])}, pages

    # One MLflow run per stage execution, named for the stage, nested under one parent run per method: the
    # method's own block and the upstream blocks as params, the per-epoch curve, the test metrics, the files.
    every_run = mlflow_runs(work)
    runs = {r.info.run_name: r for r in every_run}
    assert {f"{s}@{m}" for s in ("train", "evaluate") for m in KEPT_METHODS} <= set(runs), sorted(runs)
    tiger, tiger_test = runs["train@tiger"], runs["evaluate@tiger"]
    parent = runs["method:tiger"]
    assert tiger.data.tags["mlflow.parentRunId"] == tiger_test.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert tiger.data.tags["dvc.stage"] == "train@tiger" and tiger_test.data.tags["dvc.stage"] == "evaluate@tiger"
    assert tiger.data.tags["dataset"] == "amazon-scientific" and tiger.data.tags["git.commit"]
    assert {"method.backbone.d_model", "tokenizer.codebook_size", "embed.model", "data.source"} \
        <= set(tiger.data.params)
    assert {"train_loss", "valid_ndcg_at_10"} <= set(tiger.data.metrics)
    # the evaluate run: the test metrics beside the settings it was trained with (one row in MLflow's compare view)
    assert {"test_ndcg_at_10", "test_recall_at_10"} <= set(tiger_test.data.metrics)
    assert tiger_test.data.params["method.backbone.d_model"] == tiger.data.params["method.backbone.d_model"]
    assert "evaluate.batch_size" in tiger_test.data.params
    assert tiger.info.end_time <= tiger_test.info.start_time  # each run spans its own stage...
    flow_seconds = {r["name"]: r["total_run_time"] for r in runs_in_prefect}
    for stage in ("embed", "tokenize@rqvae", "train@tiger", "evaluate@tiger"):  # ...its work included
        assert (runs[stage].info.end_time - runs[stage].info.start_time) / 1000 >= flow_seconds[stage], stage
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    assert "train_tiger.csv" in {a.path for a in client.list_artifacts(tiger.info.run_id)}
    assert "evaluate_tiger.json" in {a.path for a in client.list_artifacts(tiger_test.info.run_id)}

    second = dvc(["repro"], work, env)
    assert second.returncode == 0 and "Running stage" not in second.stdout, second.stdout
    assert "up to date" in dvc(["status"], work, env).stdout
    subprocess.run(["git", "add", "-A"], cwd=work, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "baseline"], cwd=work, check=True, env=env)

    # `repro --dry` lists the stages whose own inputs changed; the stages after them run only if their
    # outputs then change (DVC compares hashes), so nothing upstream or beside them is touched.
    edit_params(work, {"tokenizers": {"rqvae": {"beta": 0.3}}})
    assert would_run(work, env) == {"tokenize@rqvae", "explore"}  # (the explorer: a page per tokenizer block)
    restore_baseline(work, env)  # (rqvae's beta comes from defaults.rq_tokenizer: setting it back adds a key)
    edit_params(work, {"evaluate": {"batch_size": 64}})
    assert would_run(work, env) == {f"evaluate@{m}" for m in KEPT_METHODS}  # evaluation settings, one block
    # ...and run, with tracking on: each evaluate stage logs the new value in a run of its own
    quick = {**env, "GENREC_ORCHESTRATOR": "none"}
    edited = dvc(["repro"] + [f"evaluate@{m}" for m in ("popularity", "tiger")], work, quick)
    assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
    evaluated = [r for r in mlflow_runs(work) if r.info.run_name == "evaluate@tiger"]
    assert sorted(r.data.params["evaluate.batch_size"] for r in evaluated) == ["128", "64"]
    assert all(r.info.status == "FINISHED" for r in evaluated)
    restore_baseline(work, env)
    edit_params(work, {"methods": {"sasrec": {"train": {"lr": 0.002}}}})
    # evaluate@sasrec reads the model folder alone: it runs when the retrained folder differs (DVC's hashes); the
    # report states every method's budget, so it reads the methods' blocks too
    assert would_run(work, env) == {"train@sasrec", "report"}
    edit_params(work, {"methods": {"sasrec": {"train": {"lr": 0.001}}}})
    edit_params(work, {"methods": {"decor": {"backbone": {"alpha": 0.5}}}})
    assert would_run(work, env) == {"train@decor", "report"}
    edit_params(work, {"methods": {"decor": {"backbone": {"alpha": 0.25}}}})
    # A seed method's block, run with tracking on: its two stages and the report, nothing else, each stage a run.
    edit_params(work, {"methods": {"letter": {"train": {"lr": 0.002}}}})
    assert would_run(work, env) == {"train@letter", "report"}
    edited = dvc(["repro"], work, quick)
    assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
    assert ran(edited) == {"train@letter", "evaluate@letter", "report"}, edited.stdout
    trained = [r for r in mlflow_runs(work) if r.info.run_name == "train@letter"]
    assert sorted(r.data.params["method.train.lr"] for r in trained) == ["0.002", "0.003"], \
        [r.data.params.get("method.train.lr") for r in trained]
    assert all(r.info.status == "FINISHED" and r.info.end_time > r.info.start_time for r in trained)
    restore_baseline(work, env)
    # Upstream edits: `repro --dry` names the edited stage alone; what follows it runs only if its outputs change
    # (DVC's hashes; the sweep below runs such a chain: SASRec's embeddings -> LETTER's tokenizer).
    edit_params(work, {"embed": {"template": {"separator": " | "}}})
    assert would_run(work, env) == {"embed"}
    edit_params(work, {"embed": {"template": {"separator": " "}}})
    edit_params(work, {"tokenizers": {"letter": {"beta": 0.5}}})
    assert would_run(work, env) == {"tokenize@letter", "explore"}  # the explorer has a page per tokenizer block
    # ...and run, with tracking on: the tokenizer's stages log the new value in runs of their own
    edited = dvc(["repro", "semantic_ids@letter"], work, quick)
    assert edited.returncode == 0, edited.stdout[-3000:] + edited.stderr[-3000:]
    tokenized = [r for r in mlflow_runs(work) if r.info.run_name == "tokenize@letter"]
    assert sorted(r.data.params["tokenizer.beta"] for r in tokenized) == ["0.25", "0.5"], \
        [r.data.params for r in tokenized]
    assert all(r.info.status == "FINISHED" and r.info.end_time > r.info.start_time for r in tokenized)
    restore_baseline(work, env)

    # A seed sweep (two values) queued through DVC runs in its temporary copies, shows in `dvc exp show` with its
    # metrics, and its runs land in the copy's own MLflow store, tagged with the experiment's name: the seed study of
    # a default-run method (docs/operations.md, "Sweeps (dvc exp)"). A method's seed re-runs its two stages and the
    # report, nothing else.
    queued = dvc(["exp", "run", "--queue", "-S", "methods.tiger.seed=1,2"], work, quick)
    assert queued.returncode == 0, queued.stdout + queued.stderr
    done = dvc(["exp", "run", "--run-all", "--jobs", "2"], work, quick)  # two workers, one store
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp_logs = "".join(p.read_text(errors="replace") for p in (work / ".dvc" / "tmp" / "exps" / "run").glob("*/*.out"))
    assert set(re.findall(r"Running stage '([^']+)'", exp_logs)) == {"train@tiger", "evaluate@tiger", "report"}, \
        exp_logs[-3000:]
    table = json.loads(dvc(["exp", "show", "--json"], work, env).stdout)
    swept = {exp["data"]["params"]["params.yaml"]["data"]["methods"]["tiger"]["seed"]: exp
             for row in table for exp in (row.get("experiments") or []) for exp in exp.get("revs", [])}
    assert {1, 2} <= set(swept), sorted(swept)
    for seed in (1, 2):  # each seed's row of `dvc exp show` holds its test metrics
        shown = swept[seed]["data"]["metrics"]["reports/metrics/evaluate_tiger.json"]["data"]
        assert 0.0 <= shown["ndcg@10"] <= 1.0 and shown["epochs_run"] == epochs, shown
    runs = [r for r in mlflow_runs(work) if r.info.run_name == "evaluate@tiger" and r.data.tags.get("dvc.exp")]
    tagged = {r.data.tags["dvc.exp"]: r.data.params.get("method.seed") for r in runs}
    assert {tagged.get(swept[1]["name"]), tagged.get(swept[2]["name"])} == {"1", "2"}, (tagged, sorted(swept))
    # each experiment's evaluate run carries the settings of the same experiment's train run
    assert all("test_ndcg_at_10" in r.data.metrics for r in runs), [r.data.metrics for r in runs]
