"""DVC stage `report`: every evaluated method side by side, against the baseline (params `report`).

Writes `reports/comparison.md` (metrics recomputed from each method's per-user ranks, the change of
NDCG@10 against the baseline, paired t-test and Wilcoxon p-values over users), the same as JSON in
`reports/metrics/comparison.json`, and `reports/plots/comparison.csv` for `dvc plots show`. Methods are
those of params.yaml's `methods` that have results; several seeds per method come from
`scripts/seed_study.py`, which prints the same table with mean ± std.
"""
import csv
import json
from pathlib import Path

from pipeline import paths
from pipeline.config import ParamsError, load_params
from pipeline.evaluation.comparison import compare, markdown
from pipeline.io import atomic_path, write_json
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, run_stage

RESULTS = paths.RESULTS_DIR


def training_budget(result_dir: Path) -> str:
    """ "8 (best 7), bf16" from the evaluate stage's record of the training run (epochs, and the precision
    train.precision resolved to on the training machine); "" when there were no epochs."""
    path = result_dir / "training.json"
    trained = json.loads(path.read_text()) if path.exists() else {}
    if "epoch" not in trained:
        return ""
    return f"{trained['epoch']} (best {trained['best_epoch']})" + (f", {trained['precision']}" if "precision" in trained else "")


def budget(params, methods: list[str], train_samples: int) -> str:
    """What each method trained on, from params.yaml: methods with the same train block share one line."""
    groups: dict[str, list[str]] = {}
    for m in methods:
        t = params.method(m).train
        if params.method(m).model == "popularity":
            key = "counts of the training interactions, no training"
        else:
            every = t.samples_per_epoch or train_samples
            validation = f"{t.max_eval_samples:,} fixed validation users" if t.max_eval_samples else "every validation user"
            key = (f"at most {t.epochs} epochs of {every:,} samples (batch {t.batch_size}, lr {t.lr:g}, "
                   f"{t.schedule} schedule, {t.warmup_steps} warm-up steps, patience {t.patience}), NDCG@10 on "
                   f"{validation} after every {t.eval_every} epoch(s) choosing the weights tested")
        groups.setdefault(key, []).append(m)
    return "**Budget.** " + "; ".join(f"{', '.join(ms)}: {key}" for key, ms in groups.items()) + "."


def main() -> None:
    params = load_params()
    methods = [m for m in params.methods if (RESULTS / m / "ranks.parquet").exists()]
    if not methods:
        raise ParamsError(f"{RESULTS}: no evaluated method yet; run the evaluate@<method> stages first")
    baseline = params.report.baseline
    if baseline not in methods:
        print(f"[report] baseline {baseline!r} has no results: no relative change or p-values")
        baseline = None
    result = compare({m: [RESULTS / m / "ranks.parquet"] for m in methods}, baseline)
    text = (f"# Test metrics, {params.data.dataset_name}\n\n{result['users']} users, leave-one-out, full ranking. "
            "One run per method (seeds: `scripts/seed_study.py`); trained: epochs run (best validation epoch, "
            "whose weights were tested), training precision; p-values: per-user NDCG@10 against the baseline (* p < 0.05, "
            "** p < 0.01).\n\n" + markdown(result, {m: training_budget(RESULTS / m) for m in methods}) + "\n"
            + budget(params, methods, json.loads(paths.SEQUENCE_STATS.read_text())["train_samples"]) + "\n")
    with atomic_path(paths.COMPARISON) as tmp:
        tmp.write_text(text)
    write_json(result, paths.METRICS_DIR / "comparison.json")
    with atomic_path(paths.PLOTS_DIR / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "ndcg@10", "recall@10"])
        for m, row in result["methods"].items():
            writer.writerow([m, f"{row['ndcg@10']['mean']:.6f}", f"{row['recall@10']['mean']:.6f}"])
    print(text)
    with tracking.stage_run("report", params.data.dataset_name, {"report": params.report.model_dump()}, run_name="comparison") as run:
        run.log_artifact("reports/comparison.md")


if __name__ == "__main__":
    run_stage("report", as_flow(main, name="report"))
