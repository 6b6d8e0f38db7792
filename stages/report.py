"""DVC stage `report`: every evaluated method side by side, against the baseline (params `report`).

Writes `reports/comparison.md` (metrics recomputed from each method's per-user ranks, the change of
NDCG@10 against the baseline with its paired bootstrap interval, paired t-test and Wilcoxon p-values over users
adjusted by Holm's method: ``pipeline.evaluation.comparison``), the same as JSON in
`reports/metrics/comparison.json`, and `reports/plots/comparison.csv` for `dvc plots show`. Methods are
those of params.yaml's `methods` that have results; several seeds per method come from
`scripts/seed_study.py`, which prints the same table with mean ± std.

Also the same comparison within slices of the test users (``pipeline.evaluation.slices``: target popularity,
history length, the size of the target's first-level ID group): a table per family in `comparison.md`, the
figures in `reports/metrics/slices.json`, a bar chart in `reports/plots/slices.svg` (matplotlib,
``pipeline.analysis.svg``); all logged to the report's MLflow run.
"""
import csv
import json
from pathlib import Path

import pyarrow.parquet as pq

from pipeline import paths
from pipeline.analysis import svg
from pipeline.config import ParamsError, load_params
from pipeline.evaluation import slices
from pipeline.evaluation.comparison import compare, markdown
from pipeline.io import atomic_path, write_json
from pipeline.models.folder import IDS_FILE
from pipeline.orchestration import tracking
from pipeline.orchestration.flows import as_flow, publish_markdown, run_stage

RESULTS = paths.RESULTS_DIR
SLICES_JSON = paths.METRICS_DIR / "slices.json"
SLICES_SVG = paths.PLOTS_DIR / "slices.svg"


def training_record(result_dir: Path) -> dict | None:
    """The evaluate stage's copy of the training run's record (``training.json``): epochs run, best epoch and
    precision for a model the trainer fitted; empty for a model that fits itself on the training split in one pass
    (``Recommender.fits_itself``, the popularity counts), which runs no epochs. None where there is no record."""
    path = result_dir / "training.json"
    return json.loads(path.read_text()) if path.exists() else None


def training_budget(trained: dict | None) -> str:
    """ "8 (best 7), bf16" from a training record (epochs, and the precision train.precision resolved to on the
    training machine); "" when there were no epochs."""
    if not trained or "epoch" not in trained:
        return ""
    return (f"{trained['epoch']} (best {trained['best_epoch']})"
            + (f", {trained['precision']}" if "precision" in trained else ""))


def budget(params, records: dict[str, dict | None], train_samples: int) -> str:
    """What each method trained on, from params.yaml and each method's training record (``records``, by method,
    :func:`training_record`): methods with the same train block share one line; a method whose record holds no
    epochs fitted itself in one pass and has no train block to state."""
    groups: dict[str, list[str]] = {}
    for m, trained in records.items():
        t = params.method(m).train
        if trained is not None and "epoch" not in trained:
            key = "fitted on the training split in one pass (no epochs, no validation)"
        else:
            every = t.samples_per_epoch or train_samples
            validation = (f"{t.max_eval_samples:,} fixed validation users" if t.max_eval_samples
                          else "every validation user")
            key = (f"at most {t.epochs} epochs of {every:,} samples (batch {t.batch_size}, lr {t.lr:g}, "
                   f"{t.schedule} schedule, {t.warmup_steps} warm-up steps, patience {t.patience}), NDCG@10 on "
                   f"{validation} after every {t.eval_every} epoch(s) choosing the weights tested")
        groups.setdefault(key, []).append(m)
    return "**Budget.** " + "; ".join(f"{', '.join(ms)}: {key}" for key, ms in groups.items()) + "."


def slice_comparison(methods: list[str], baseline: str | None) -> dict:
    """Every method's test metrics within the slices of ``pipeline.evaluation.slices``; the prefix family for the
    methods whose model folder holds semantic IDs (the generative ones; ETEGRec's are its learned IDs)."""
    n_items = pq.read_metadata(paths.ITEMS).num_rows
    shared = slices.shared_slices(paths.SEQUENCES_DIR / "train.parquet", paths.TEST_SPLIT,
                                  paths.SEQUENCES_DIR / "interactions.parquet", n_items)
    prefix = {m: slices.prefix_slices(paths.TEST_SPLIT, paths.model_dir(m) / IDS_FILE) for m in methods
              if (paths.model_dir(m) / IDS_FILE).exists()}
    return slices.compare_slices({m: RESULTS / m / "ranks.parquet" for m in methods}, baseline, shared,
                                 {"prefix": {m: labels for m, (labels, _) in prefix.items()}} if prefix else None,
                                 {"prefix": {m: spans for m, (_, spans) in prefix.items()}})


def slices_chart(result: dict) -> str:
    """NDCG@10 per slice and method, a panel per slice family, each method in the same colour in every panel."""
    methods = list(dict.fromkeys(m for block in result["families"].values() for m in block["methods"]))
    panels = []
    for block in result["families"].values():
        groups = list(dict.fromkeys(s for row in block["methods"].values() for s in row))
        series = {m: [row.get(g, {}).get("ndcg@10", float("nan")) for g in groups]
                  for m, row in block["methods"].items()}
        panels.append((f"NDCG@10 by {block['title']}", groups, series))
    return svg.grouped_bars(panels, y_label="NDCG@10",
                            colors={m: svg.PALETTE[i % len(svg.PALETTE)] for i, m in enumerate(methods)})


def write_slices(result: dict) -> None:
    write_json(result, SLICES_JSON)
    with atomic_path(SLICES_SVG) as tmp:
        tmp.write_text(slices_chart(result))


def slice_metrics(result: dict) -> dict[str, float]:
    """MLflow metrics of the slice tables: <family>.<slice>.<method>.ndcg_at_10 (and its users)."""
    out = {}
    for family, block in result["families"].items():
        for method, row in block["methods"].items():
            for s, cell in row.items():
                key = f"{family}.{s.replace(' items', '').replace('+', '_up')}.{method}"
                out[f"{key}.ndcg_at_10"] = cell["ndcg@10"]
                out[f"{key}.users"] = float(cell["users"])
    return out


def main() -> None:
    params = load_params()
    with tracking.stage_run("report", params.data.dataset_name, {"report": params.report.model_dump()}) as run:
        by_slice = write_report(params)  # (the run spans the stage's work)
        run.log_metrics(slice_metrics(by_slice))
        for path in (paths.COMPARISON, SLICES_JSON, SLICES_SVG):
            run.log_artifact(str(path))


def write_report(params) -> dict:
    """The comparison, its slices and its chart written; the per-slice figures returned."""
    methods = [m for m in params.methods if (RESULTS / m / "ranks.parquet").exists()]
    if not methods:
        raise ParamsError(f"{RESULTS}: no evaluated method yet; run the evaluate@<method> stages first")
    baseline = params.report.baseline
    if baseline not in methods:
        print(f"[report] baseline {baseline!r} has no results: no relative change or p-values")
        baseline = None
    result = compare({m: [RESULTS / m / "ranks.parquet"] for m in methods}, baseline,
                     resamples=params.report.bootstrap_resamples)
    records = {m: training_record(RESULTS / m) for m in methods}
    text = (f"# Test metrics, {params.data.dataset_name}\n\n{result['users']} users, leave-one-out, full ranking. "
            "One run per method (seeds: `scripts/seed_study.py`); trained: epochs run (best validation epoch, "
            "whose weights were tested), training precision"
            + ("; against the baseline: per-user NDCG@10, the columns explained under the table" if baseline else "")
            + ".\n\n"
            + markdown(result, {m: training_budget(records[m]) for m in methods}) + "\n"
            + budget(params, records, json.loads(paths.SEQUENCE_STATS.read_text())["train_samples"]) + "\n")
    by_slice = slice_comparison(methods, baseline)
    text += (f"\n## Where the differences are\n\n{slices.markdown(by_slice)}\nThe same as a chart: "
             f"[{SLICES_SVG.name}](plots/{SLICES_SVG.name}); the figures: `{SLICES_JSON}`.\n")
    with atomic_path(paths.COMPARISON) as tmp:
        tmp.write_text(text)
    write_json(result, paths.METRICS_DIR / "comparison.json")
    write_slices(by_slice)
    with atomic_path(paths.PLOTS_DIR / "comparison.csv") as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "ndcg@10", "recall@10"])
        for m, row in result["methods"].items():
            writer.writerow([m, f"{row['ndcg@10']['mean']:.6f}", f"{row['recall@10']['mean']:.6f}"])
    print(text)
    publish_markdown("report", text)  # the comparison in the Prefect UI, beside the flow run
    return by_slice


if __name__ == "__main__":
    run_stage("report", as_flow(main, name="report"))
