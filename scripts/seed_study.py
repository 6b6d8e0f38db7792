"""Compare methods over several training seeds on the current data, with a paired test over users.

Trains and evaluates every (method, seed) with the stages' own code (`pipeline.training.standalone`) on the
splits and semantic IDs that `dvc repro` left in `data/` (of ``--workspace``), under one shared budget, then writes a
Markdown table (mean ± std over seeds per metric; per-user NDCG@10 averaged over seeds compared with the
baseline by a paired t-test and a Wilcoxon signed-rank test) and the same figures as JSON.

    python scripts/seed_study.py --name decor_ablation --baseline tiger \
        --methods tiger decor_composition decor_composition_bos decor_fusion decor_fusion_composition decor \
        --seeds 2025 2026 2027 --set defaults.generative.train.epochs=2 --workers 2

Runs are kept under data/studies/<name>/<method>-s<seed>/: an interrupted study resumes where it
stopped (finished runs are skipped, a half-trained one resumes from its checkpoint; `--re-evaluate` ranks
the finished runs' models again with the current code, e.g. after a decoder change). `--set` takes params.yaml
keys from its top, exactly as `dvc exp run -S` does: a family's key (`defaults.generative.train.epochs=2`) is the
budget of every method that extends it, so all of them share it; a method's own
(`++methods.tiger.train.epochs=2`, `++` where its block lacks the key) changes that method alone. Each
(method, seed) run is an MLflow run `study@<method>-s<seed>` under the parent `study:<name>`, with its curve and
test metrics. Seeds of the default run's methods can also go through DVC, one experiment per seed in
`dvc exp show`: `dvc exp run --queue -S 'methods.tiger.seed=1,2,3'` (docs/operations.md, "Sweeps (dvc exp)").
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run_one(raw_params: dict, method: str, seed: int, run_dir: str, threads: int, re_evaluate: bool = False,
            study: str = "study") -> dict:
    """One training + test evaluation in a worker process; returns its result (``train_and_evaluate``'s). Tracked
    in MLflow as the run ``study@<method>-s<seed>``, nested under the parent run ``study:<name>``
    (GENREC_TRACKING=0: not tracked)."""
    os.environ.setdefault("GENREC_ORCHESTRATOR", "none")
    import torch

    torch.set_num_threads(threads)
    from pipeline.config import params_from_dict
    from pipeline.evaluation.evaluate import evaluate_model
    from pipeline.orchestration import tracking
    from pipeline.training.standalone import train_and_evaluate, write_result

    run_dir = Path(run_dir)
    done = run_dir / "result.json"
    params = params_from_dict(raw_params)
    log_file = open(run_dir.parent / f"{run_dir.name}.log", "a")

    def log(msg):
        print(msg, file=log_file, flush=True)

    if done.exists():
        result = json.loads(done.read_text())
        if re_evaluate:  # the trained model as it is, ranked again by the current code
            log("re-evaluating the finished run with the current ranking code")
            result["test"] = evaluate_model(run_dir / "model", run_dir / "results", params.evaluate, log=log)
            result["re_evaluated"] = True
            write_result(result, done)
        return result

    settings = {"method": params.method(method).model_dump(), "seed": seed, "study": study}
    with tracking.stage_run(f"study@{method}-s{seed}", params.data.dataset_name, settings,
                            group=f"study:{study}") as run:
        run.set_tags({"study": study, "study.method": method, "study.seed": str(seed)})
        result = train_and_evaluate(params, method, run_dir / "model", run_dir / "results", log=log,
                                    on_epoch=lambda epoch, row: run.log_metrics(
                                        {k: v for k, v in row.items() if isinstance(v, (int, float))
                                         and k != "epoch"}, step=epoch))
        run.log_metrics({f"test_{k}": v for k, v in result["test"].items() if isinstance(v, float)})
    result = {**result, "seed": seed}
    write_result(result, done)
    return result


def mean_std(values: list[float]) -> str:
    mean = sum(values) / len(values)
    std = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return f"{mean:.4f} ± {std:.4f}"


def tokenizer_usage(model_folder: Path, level: int) -> float:
    """The share of level ``level``'s K codes that the model's own semantic IDs use (Table 3's first column)."""
    import polars as pl

    K = json.loads((model_folder / "model.json").read_text())["config"]["codebook_size"]
    return pl.read_parquet(model_folder / "semantic_ids.parquet")[f"c{level}"].n_unique() / K


def training_diagnostics(results: dict[str, list[dict]], runs: Path) -> str:
    """Markdown: each method's validation NDCG@10 (the best epoch's: what a default is chosen on) and, for
    methods that compose (DECOR), the last epoch's composition statistics per level (mean ± std over seeds):
    Table 3's active share by the epoch-mean rule and by the per-sample rule (a code counts when it reaches
    1/K for >= 1 % of the samples), each sample's largest weight, and I(user; code) / log K."""
    lines = ["", "", "Validation (best epoch) and, for DECOR, the last training epoch's composition weights per "
             "level l: active codes by the epoch-mean rule (mean weight >= 1/K, the paper's Table 3) / by the "
             "per-sample rule (>= 1/K for >= 1 % of the samples), each sample's largest weight, I(user; code) / "
             "log K (0 = the same weights for every user); the tokenizer's own usage of the level's codes beside them.",
             "", "| method | valid N@10 | epochs | level | tokenizer | active (mean rule) | active (per-sample rule) "
             "| sample max | I(user; code) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, runs_list in results.items():
        valid = mean_std([r["summary"].get("best_valid_ndcg@10", float("nan")) for r in runs_list])
        epochs = "/".join(str(r["summary"].get("epochs_run", "?")) for r in runs_list)
        last = [r["history"][-1] if r.get("history") else {} for r in runs_list]
        levels = sorted({int(k.rsplit("_l", 1)[1]) for row in last for k in row
                         if k.startswith("composition_active_l")})
        if not levels:
            lines.append(f"| {method} | {valid} | {epochs} | — | — | — | — | — | — |")
        for level in levels:
            cells = [mean_std([row[f"{name}_l{level}"] for row in last]) for name in
                     ("composition_active", "composition_active_per_sample", "composition_sample_max",
                      "composition_user_information")]
            usage = tokenizer_usage(runs / f"{method}-s{runs_list[0]['seed']}" / "model", level)
            lines.append(f"| {method} | {valid if level == levels[0] else ''} | {epochs if level == levels[0] else ''} "
                         f"| {level} | {usage:.1%} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def id_dynamics(results: dict[str, list[dict]]) -> str:
    """Markdown, for methods that re-derive their IDs while training (ETEGRec): per re-derivation (cycle), the
    share of items whose ID changed, per-level utilisation and the collision rate of the new IDs; per epoch the
    loss terms (REC, SQ, SIA, PSA; batch means averaged over the epoch). Mean ± std over seeds."""
    lines = []
    for method, runs_list in results.items():
        histories = [r.get("history") or [] for r in runs_list]
        if not any("ids_changed" in row for h in histories for row in h):
            continue
        if not lines:
            lines += ["", "", "IDs re-derived while training: per epoch, its phase, the share of items whose ID "
                      "changed at its end, the new IDs' per-level utilisation and collision rate, and the loss terms "
                      "(mean ± std over seeds; — where the epoch had none)."]
        lines += ["", f"**{method}**", "", "| epoch | phase | IDs changed | utilisation l1 / l2 / l3 | collisions "
                  "| REC | SQ | SIA | PSA | valid N@10 |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i in range(max(len(h) for h in histories)):
            rows = [h[i] for h in histories if len(h) > i]

            def cell(key, rows=rows):
                values = [row[key] for row in rows if key in row]
                return mean_std(values) if values else "—"

            util = " / ".join(cell(f"utilisation_l{level}") for level in (1, 2, 3))
            lines.append(f"| {i + 1} | {'/'.join(sorted({row.get('phase', '') for row in rows}))} "
                         f"| {cell('ids_changed')} "
                         f"| {util} | {cell('collision_rate')} | {cell('loss_rec')} | {cell('loss_sq')} "
                         f"| {cell('loss_sia')} | {cell('loss_psa')} | {cell('valid_ndcg@10')} |")
    return "\n".join(lines) + ("\n" if lines else "")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--methods", nargs="+", required=True)
    ap.add_argument("--seeds", nargs="+", type=int, required=True)
    ap.add_argument("--baseline", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a params.yaml key from its top, as dvc exp run -S takes it, e.g. "
                         "defaults.generative.train.epochs=2 (repeat for more)")
    ap.add_argument("--workers", type=int, default=1, help="runs in parallel (threads are split between them)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads per run (default: the CPUs split between the workers); 1 beside other jobs")
    ap.add_argument("--re-evaluate", action="store_true",
                    help="rank finished runs' models again with the current code (after a decoder or metric "
                         "change) instead of skipping them; unfinished runs train as usual")
    ap.add_argument("--out", type=Path, default=None, help="Markdown report (default reports/studies/<name>.md)")
    ap.add_argument("--workspace", type=Path, default=REPO,
                    help="the folder whose params.yaml and data/ the study reads (default: this repository); e.g. "
                         "a copy run on other data, with pipeline/ and stages/ linked")
    args = ap.parse_args()
    if args.baseline not in args.methods:
        raise SystemExit(f"--baseline {args.baseline} must be one of --methods")
    return args


def run_params(raw: dict, methods: list[str], seeds: list[int], overrides: list[str]) -> dict[tuple[str, int], dict]:
    """The params mapping of every (method, seed): params.yaml with ``overrides`` (root keys, as `dvc exp run -S`
    takes them), then the run's seed in the method's block."""
    from pipeline.config import apply_overrides

    section = {m: s for s in ("methods", "more_methods") for m in (raw.get(s) or {})}
    missing = [m for m in methods if m not in section]
    if missing:
        raise SystemExit(f"params.yaml has no methods (or more_methods) block for {missing}")
    shared = apply_overrides(raw, overrides)  # a bad key stops here, before any run starts
    return {(m, seed): apply_overrides(shared, [f"++{section[m]}.{m}.seed={seed}"]) for seed in seeds for m in methods}


def run_all(args: argparse.Namespace, params: dict[tuple[str, int], dict], runs: Path) -> dict[tuple[str, int], dict]:
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.workers)
    jobs = {}
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for (m, seed), raw in params.items():
            run_dir = runs / f"{m}-s{seed}"
            run_dir.mkdir(parents=True, exist_ok=True)
            jobs[(m, seed)] = pool.submit(run_one, raw, m, seed, str(run_dir), threads, args.re_evaluate, args.name)
        results = {}
        for key, job in jobs.items():
            results[key] = job.result()
            print(f"{key[0]} seed {key[1]}: test NDCG@10 {results[key]['test']['ndcg@10']:.4f}", flush=True)
    return results


def write_report(args: argparse.Namespace, results: dict[tuple[str, int], dict], runs: Path, out: Path) -> None:
    from pipeline.evaluation.comparison import compare, markdown

    summary = compare({m: [runs / f"{m}-s{s}" / "results" / "ranks.parquet" for s in args.seeds]
                       for m in args.methods}, args.baseline)
    summary.update(seeds=args.seeds, overrides=args.set)
    table = markdown(summary)
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {args.name}\n\nSeeds {args.seeds}; budget overrides {args.set or 'none'}; test split, "
              f"{summary['users']} users. Mean ± std over seeds; p-values compare per-user NDCG@10 "
              "(averaged over seeds) with the baseline (* p < 0.05, ** p < 0.01).\n\n")
    by_method = {m: [results[(m, s)] for s in args.seeds] for m in args.methods}
    table += training_diagnostics(by_method, runs) + id_dynamics(by_method)
    out.write_text(header + table)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    print(header + table)


def main() -> None:
    args = parse_args()
    from pipeline import paths

    out = args.out.resolve() if args.out is not None else None
    os.chdir(args.workspace)
    params = run_params(yaml.safe_load(Path("params.yaml").read_text()), args.methods, args.seeds, args.set)
    runs = paths.study_dir(args.name)
    results = run_all(args, params, runs)
    write_report(args, results, runs, out or paths.STUDY_REPORTS_DIR / f"{args.name}.md")


if __name__ == "__main__":
    from pipeline.config import ParamsError

    try:
        main()
    except ParamsError as exc:  # a bad --set or params.yaml: its message, no traceback
        sys.exit(f"seed_study: error: {exc}")
