"""Compare methods from their per-user test ranks: metrics, change against a baseline, intervals, paired tests.

One place for the comparison that the `report` stage (one run per method) and `scripts/seed_study.py`
(several seeds per method) both print. Each method is given as a list of runs (one per seed), each run
a ``ranks.parquet`` of (user_id, target, rank); metrics are recomputed from the ranks with the
evaluator's own formula (``pipeline.evaluation.metrics.user_gains``). Against the baseline, per-user NDCG@10
(averaged over a method's seeds) is compared with the baseline's over the same users: the mean difference and
the relative change with a paired bootstrap confidence interval, and the paired t-test and Wilcoxon signed-rank
p-values (the papers' significance marks), adjusted for the number of methods compared by Holm's step-down
method (Holm 1979).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.evaluation.metrics import user_gains

REPORTED_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")
CONFIDENCE = 0.95  # of the bootstrap intervals
# 4,999 resamples: enough that an interval's endpoints barely move with the resampling seed (more move them little
# further at proportionally more time); batches of 200 resamples bound the memory of BCa's resampling and jackknife
# (Efron & Tibshirani 1993, ch. 14; scipy.stats.bootstrap).
BOOTSTRAP_RESAMPLES = 4999
BOOTSTRAP_BATCH = 200
BOOTSTRAP_SEED = 0


def load_ranks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path, columns=["user_id", "rank"]).sort_by("user_id")
    return table["user_id"].to_numpy(), table["rank"].to_numpy()


def run_metrics(ranks: np.ndarray) -> dict[str, float]:
    out = {}
    for k in (5, 10):
        hit, ndcg = user_gains(ranks, k)
        out[f"recall@{k}"], out[f"ndcg@{k}"] = float(hit.mean()), float(ndcg.mean())
    return out


def compare(runs: dict[str, list[Path]], baseline: str | None, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """{method: [ranks.parquet per seed]} -> per method: mean/std/per-seed of each metric and, against ``baseline``,
    the change of NDCG@10 with its paired bootstrap interval and the Holm-adjusted paired tests
    (:func:`against_baseline`)."""

    users_ref = None
    per_method, user_ndcg = {}, {}
    for method, files in runs.items():
        seeds = []
        gains = []
        for f in files:
            users, ranks = load_ranks(f)
            if users_ref is None:
                users_ref = users
            elif not np.array_equal(users, users_ref):
                raise ValueError(f"{f}: ranks a different set of users than the other runs")
            seeds.append(run_metrics(ranks))
            gains.append(user_gains(ranks, 10)[1])
        user_ndcg[method] = np.mean(gains, axis=0)
        per_method[method] = {
            m: {"mean": float(np.mean([s[m] for s in seeds])),
                "std": float(np.std([s[m] for s in seeds], ddof=1)) if len(seeds) > 1 else 0.0,
                "per_seed": [s[m] for s in seeds]} for m in REPORTED_METRICS}
        per_method[method]["runs"] = len(files)
    result = {"baseline": baseline, "users": 0 if users_ref is None else int(len(users_ref)), "methods": per_method}
    if baseline is not None and baseline in per_method:
        against_baseline(per_method, user_ndcg, baseline, resamples=resamples)
        result["comparisons"] = len(per_method) - 1
        result["bootstrap"] = {"resamples": resamples, "confidence": CONFIDENCE, "method": "BCa",
                               "seed": BOOTSTRAP_SEED}
    return result


def against_baseline(per_method: dict, user_ndcg: dict[str, np.ndarray], baseline: str, alpha: float = 0.05,
                     resamples: int = BOOTSTRAP_RESAMPLES) -> None:
    """Fill each method's row with its per-user NDCG@10 against ``baseline``'s: the relative change, the mean
    difference and both with their paired bootstrap interval (:func:`paired_bootstrap`), the paired t-test and
    Wilcoxon p-values, raw and Holm-adjusted over the table's comparisons (:func:`holm`), and the change a
    t-test at Holm's strictest level would detect (:func:`detectable_change`)."""
    base = per_method[baseline]["ndcg@10"]["mean"]
    others = [m for m in per_method if m != baseline]
    for method, row in per_method.items():
        row["relative_ndcg@10"] = (row["ndcg@10"]["mean"] / base - 1.0) if base > 0 else float("nan")
        if method == baseline:
            row["paired_t_p"] = row["wilcoxon_p"] = float("nan")
            continue
        row.update(paired_bootstrap(user_ndcg[method], user_ndcg[baseline], resamples))
        row["paired_t_p"], row["wilcoxon_p"] = paired_tests(user_ndcg[method], user_ndcg[baseline])
        diff = user_ndcg[method] - user_ndcg[baseline]
        if diff.any():
            row["detectable_relative_ndcg@10"] = detectable_change(diff, base, alpha / len(others))
    for test in ("paired_t_p", "wilcoxon_p"):
        for method, adjusted in zip(others, holm([per_method[m][test] for m in others])):
            per_method[method][f"{test}_holm"] = float(adjusted)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (Holm 1979, "A simple sequentially rejective multiple
    test procedure", Scand. J. Statist. 6: 65-70): with the m p-values sorted, p_(1) <= ... <= p_(m), the
    adjusted p_(i) is max over j <= i of min(1, (m - j + 1) p_(j)). Rejecting where the adjusted p < alpha controls
    the family-wise error rate at alpha. NaN entries (comparisons not tested) stay NaN and do not count in m."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = len(order)
    out[order] = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    return out


def _means_difference_and_ratio(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    mean_a, mean_b = a.mean(axis=axis), b.mean(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.stack([mean_a - mean_b, mean_a / mean_b - 1.0])


def paired_bootstrap(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """The mean difference of per-user ``a`` and ``b`` and their relative change mean(a) / mean(b) - 1, each with
    its paired bootstrap confidence interval over users (``scipy.stats.bootstrap``, BCa, Efron and Tibshirani 1993,
    ch. 14): users are resampled with their pair of values. Every comparison draws from a generator seeded with
    ``BOOTSTRAP_SEED``: the same resampled users for every method, and the same bytes on every run."""
    from scipy import stats

    estimate = _means_difference_and_ratio(a, b)
    out = {"ndcg@10_difference": float(estimate[0])}
    if not (a - b).any():  # identical per user: every resample gives 0, the interval is the point
        return {**out, "ndcg@10_difference_ci": [0.0, 0.0], "relative_ndcg@10_ci": [0.0, 0.0]}
    with warnings.catch_warnings():  # a resample whose baseline mean is 0 has no ratio: its interval is NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        interval = stats.bootstrap((a, b), _means_difference_and_ratio, paired=True, vectorized=True,
                                   n_resamples=resamples, batch=BOOTSTRAP_BATCH,
                                   confidence_level=CONFIDENCE, method="BCa",
                                   rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
    low, high = np.asarray(interval.low, dtype=float), np.asarray(interval.high, dtype=float)
    return {**out, "ndcg@10_difference_ci": [float(low[0]), float(high[0])],
            "relative_ndcg@10_ci": [float(low[1]), float(high[1])] if np.isfinite(estimate[1]) else [np.nan] * 2}


def paired_tests(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Paired t-test and Wilcoxon signed-rank p-values of per-user ``a`` against ``b`` (1.0 when they are equal)."""
    from scipy import stats

    diff = a - b
    if not diff.any():
        return 1.0, 1.0
    return float(stats.ttest_rel(a, b).pvalue), float(stats.wilcoxon(diff[diff != 0]).pvalue)


def detectable_change(diff: np.ndarray, base: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest change of mean NDCG@10, relative to the baseline's ``base``, that a two-sided paired t-test
    at ``alpha`` finds with probability ``power`` over these users, given the spread of the per-user
    differences ``diff``: (z_{1-alpha/2} + z_power) * sd(diff) / sqrt(n) / base (normal approximation)."""
    from scipy import stats

    if base <= 0 or len(diff) < 2:
        return float("nan")
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * np.std(diff, ddof=1) / math.sqrt(len(diff)) / base)


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    stars = "**" if p < 0.01 else "*" if p < 0.05 else ""
    return f"{p:.3g}{stars}"


def _with_interval(value: float, interval: list[float] | None, fmt: str) -> str:
    """``+0.0116 [+0.0084, +0.0149]``: a change and its confidence interval (— where there is none)."""
    if value is None or math.isnan(value):
        return "—"
    text = format(value, fmt)
    if interval is not None and not any(math.isnan(x) for x in interval):
        text += f" [{format(interval[0], fmt)}, {format(interval[1], fmt)}]"
    return text


def markdown(result: dict, trained: dict[str, str] | None = None) -> str:
    """The comparison table, what its columns mean, and what it separates; ``trained`` adds a column saying each
    method's training budget."""
    baseline = result["baseline"]
    multi = any(row["runs"] > 1 for row in result["methods"].values())
    head = "| method | runs | " + ("trained | " if trained is not None else "") + \
        " | ".join(m.replace("recall", "R").replace("ndcg", "N") for m in REPORTED_METRICS)
    lines = []
    if baseline:
        ci = f"[{100 * result['bootstrap']['confidence']:g} % CI]"
        head += f" | ΔN@10 {ci} | N@10 vs {baseline} {ci} | t-test p (Holm) | Wilcoxon p (Holm) |"
    else:
        head += " |"
    lines.append(head)
    lines.append("| --- " * (head.count("|") - 1) + "|")
    for method, row in result["methods"].items():
        cells = [f"{row[m]['mean']:.4f}" + (f" ± {row[m]['std']:.4f}" if multi else "") for m in REPORTED_METRICS]
        budget = f"{trained.get(method) or '—'} | " if trained is not None else ""
        line = f"| {method} | {row['runs']} | " + budget + " | ".join(cells)
        if baseline and method == baseline:
            line += " | — | — | — | — |"
        elif baseline:
            line += (f" | {_with_interval(row['ndcg@10_difference'], row['ndcg@10_difference_ci'], '+.4f')}"
                     f" | {_with_interval(row['relative_ndcg@10'], row['relative_ndcg@10_ci'], '+.1%')}"
                     f" | {_p(row['paired_t_p_holm'])} | {_p(row['wilcoxon_p_holm'])} |")
        else:
            line += " |"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if baseline and result["comparisons"]:
        text += "\n" + legend(result) + "\n\n" + separation(result) + "\n"
    return text


def legend(result: dict) -> str:
    """What the columns against the baseline mean: the intervals and the correction behind them."""
    boot = result["bootstrap"]
    base = result["baseline"]
    return (f"ΔN@10: the mean over users of the per-user NDCG@10 difference against {base}; N@10 vs {base}: the "
            f"relative change of mean NDCG@10. In brackets their {100 * boot['confidence']:g} % paired bootstrap "
            f"confidence interval over users ({boot['method']}, {boot['resamples']:,} resamples, seed {boot['seed']}; "
            "each comparison on its own, not adjusted). p (Holm): the paired t-test and the Wilcoxon signed-rank test "
            "of per-user NDCG@10, each adjusted by Holm's step-down method (Holm 1979) for the table's "
            f"{result['comparisons']} comparisons (* p < 0.05, ** p < 0.01).")


def separation(result: dict, alpha: float = 0.05) -> str:
    """What the comparison can and cannot tell apart: for each method, its NDCG@10 against the baseline's,
    separated when both paired tests over users give Holm-adjusted p < ``alpha``."""
    baseline = result["baseline"]
    separated, not_separated = [], []
    for method, row in result["methods"].items():
        if method == baseline or math.isnan(row.get("paired_t_p", float("nan"))):
            continue
        rel = row.get("relative_ndcg@10", float("nan"))
        what = f"{method} {rel:+.0%}" if not math.isnan(rel) else method
        t, w = row["paired_t_p_holm"], row["wilcoxon_p_holm"]
        (separated if max(t, w) < alpha else not_separated).append(f"{what} (t p {t:.2g}, Wilcoxon p {w:.2g})")
    parts = [f"**What this comparison separates** (NDCG@10 per user against {baseline}; both tests p < {alpha:g} "
             "after Holm's correction): " + ("; ".join(separated) if separated else "nothing") + "."]
    if not_separated:
        parts.append("Not separated: " + "; ".join(not_separated) + ": a difference of this size needs more users "
                     "or seeds (`scripts/seed_study.py`) to be told from chance.")
    detectable = [row["detectable_relative_ndcg@10"] for m, row in result["methods"].items()
                  if m != baseline and not math.isnan(row.get("detectable_relative_ndcg@10", float("nan")))]
    if detectable:
        strictest = alpha / result["comparisons"]
        parts.append(f"With these {result['users']:,} users, a paired t-test at Holm's strictest level "
                     f"({alpha:g} / {result['comparisons']} = {strictest:.2g}) finds a change of NDCG@10 against "
                     f"{baseline} of about {min(detectable):.0%} to {max(detectable):.0%} (depending on the method) "
                     "four times in five; smaller true differences mostly go unseen.")
    return " ".join(parts)
