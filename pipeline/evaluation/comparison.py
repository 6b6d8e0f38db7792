"""Compare methods from their per-user test ranks: metrics, change against a baseline, paired tests.

One place for the comparison that the `report` stage (one run per method) and `scripts/seed_study.py`
(several seeds per method) both print. Each method is given as a list of runs (one per seed), each run
a ``ranks.parquet`` of (user_id, target, rank); metrics are recomputed from the ranks with the
evaluator's own formula (``pipeline.evaluation.metrics.user_gains``). The paired tests compare per-user NDCG@10,
averaged over a method's seeds, with the baseline's, over the same users (the papers' significance marks).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.evaluation.metrics import user_gains

REPORTED_METRICS = ("recall@5", "recall@10", "ndcg@5", "ndcg@10")


def load_ranks(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(path, columns=["user_id", "rank"]).sort_by("user_id")
    return table["user_id"].to_numpy(), table["rank"].to_numpy()


def run_metrics(ranks: np.ndarray) -> dict[str, float]:
    out = {}
    for k in (5, 10):
        hit, ndcg = user_gains(ranks, k)
        out[f"recall@{k}"], out[f"ndcg@{k}"] = float(hit.mean()), float(ndcg.mean())
    return out


def compare(runs: dict[str, list[Path]], baseline: str | None) -> dict:
    """{method: [ranks.parquet per seed]} -> per method: mean/std/per-seed of each metric, the relative
    change of NDCG@10 against ``baseline`` and paired t-test / Wilcoxon p-values over users."""

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
    if baseline is not None and baseline in per_method:
        base = per_method[baseline]["ndcg@10"]["mean"]
        for method, row in per_method.items():
            row["relative_ndcg@10"] = (row["ndcg@10"]["mean"] / base - 1.0) if base > 0 else float("nan")
            if method == baseline:
                row["paired_t_p"] = row["wilcoxon_p"] = float("nan")
                continue
            row["paired_t_p"], row["wilcoxon_p"] = paired_tests(user_ndcg[method], user_ndcg[baseline])
            diff = user_ndcg[method] - user_ndcg[baseline]
            if diff.any():
                row["detectable_relative_ndcg@10"] = detectable_change(diff, base)
    return {"baseline": baseline, "users": 0 if users_ref is None else int(len(users_ref)), "methods": per_method}


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


def markdown(result: dict, trained: dict[str, str] | None = None) -> str:
    """The comparison table; ``trained`` adds a column saying each method's training budget."""
    baseline = result["baseline"]
    multi = any(row["runs"] > 1 for row in result["methods"].values())
    head = "| method | runs | " + ("trained | " if trained is not None else "") + \
        " | ".join(m.replace("recall", "R").replace("ndcg", "N") for m in REPORTED_METRICS)
    lines = []
    if baseline:
        head += f" | N@10 vs {baseline} | paired t p | Wilcoxon p |"
    else:
        head += " |"
    lines.append(head)
    lines.append("| --- " * (head.count("|") - 1) + "|")
    for method, row in result["methods"].items():
        cells = [f"{row[m]['mean']:.4f}" + (f" ± {row[m]['std']:.4f}" if multi else "") for m in REPORTED_METRICS]
        budget = f"{trained.get(method) or '—'} | " if trained is not None else ""
        line = f"| {method} | {row['runs']} | " + budget + " | ".join(cells)
        if baseline:
            rel = row.get("relative_ndcg@10", float("nan"))
            line += (f" | {'—' if math.isnan(rel) else f'{rel:+.1%}'} | {_p(row.get('paired_t_p'))} | "
                     f"{_p(row.get('wilcoxon_p'))} |")
        else:
            line += " |"
        lines.append(line)
    text = "\n".join(lines) + "\n"
    if baseline:
        text += "\n" + separation(result) + "\n"
    return text


def separation(result: dict, alpha: float = 0.05) -> str:
    """What the comparison can and cannot tell apart: for each method, its NDCG@10 against the baseline's,
    separated when both paired tests over users give p < ``alpha``."""
    baseline = result["baseline"]
    separated, not_separated = [], []
    for method, row in result["methods"].items():
        if method == baseline or math.isnan(row.get("paired_t_p", float("nan"))):
            continue
        rel = row.get("relative_ndcg@10", float("nan"))
        what = f"{method} {rel:+.0%}" if not math.isnan(rel) else method
        tests = f"t p {row['paired_t_p']:.2g}, Wilcoxon p {row['wilcoxon_p']:.2g}"
        (separated if max(row["paired_t_p"], row["wilcoxon_p"]) < alpha else not_separated).append(f"{what} ({tests})")
    parts = [f"**What this comparison separates** (NDCG@10 per user against {baseline}; both tests p < {alpha:g}): "
             + ("; ".join(separated) if separated else "nothing") + "."]
    if not_separated:
        parts.append("Not separated: " + "; ".join(not_separated) + ": a difference of this size needs more users "
                     "or seeds (`scripts/seed_study.py`) to be told from chance.")
    detectable = [row["detectable_relative_ndcg@10"] for m, row in result["methods"].items()
                  if m != baseline and not math.isnan(row.get("detectable_relative_ndcg@10", float("nan")))]
    if detectable:
        parts.append(f"With these {result['users']:,} users, a paired t-test at p < {alpha:g} finds a change of "
                     f"NDCG@10 against {baseline} of about {min(detectable):.0%} to {max(detectable):.0%} (depending "
                     "on the method) four times in five; smaller true differences mostly go unseen.")
    return " ".join(parts)
