"""Test metrics by slice of users: where a method's gain over the baseline comes from.

Three slice families, each a partition of the test users (every user has one leave-one-out target, so
every user falls in exactly one slice of each family):

- ``popularity``: the target item's number of *training* interactions (the train split only: the
  validation and test targets are never counted). Items are ranked by that count; ``head`` holds the
  most-interacted items that together make up the first third of all training interactions, ``torso`` the
  next third, ``tail`` the rest; ``cold`` takes the targets with at most ``COLD_MAX`` training interactions
  out of the tail (defined once here, for every dataset).
- ``history``: the number of items before the user's test target (the whole sequence, not the model's
  truncated window), cut at the quartiles of that number over the test users (ties merge buckets).
- ``prefix``: generative methods only. The size of the target's first-level group in the method's own
  semantic IDs (how many items share the target's first code), cut at the tertiles over the test users.
  DECOR's paper argues its composition helps exactly where codes are shared (DECOR §1, §3.2).

Each slice carries its user count and, against the baseline over the same users, the relative change of
NDCG@10 and the paired t-test and Wilcoxon p-values (the comparison's own tests, ``comparison.compare``), raw and
adjusted by Holm's step-down method (Holm 1979) over all the cells of the three families together: the slice
tables are one family of comparisons, apart from the report's main table.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pipeline.evaluation.comparison import holm, load_ranks, paired_tests
from pipeline.evaluation.metrics import user_gains

COLD_MAX = 2  # a target seen at most this often in training is "cold" (on Scientific: 887 of 8,317 test users)
FAMILIES = ("popularity", "history", "prefix")
FAMILY_TITLES = {
    "popularity": "target popularity in the training split",
    "history": "length of the user's history",
    "prefix": "items sharing the target's first code (the method's own IDs)",
}


# ----- what defines the slices -------------------------------------------------------------------
def training_counts(train_path: Path, n_items: int) -> np.ndarray:
    """Training interactions per item, from the train split alone: each sample's target, plus the first item of
    each user's shortest history (the one item of a sequence that is never a training target)."""
    table = pq.read_table(train_path, columns=["user_id", "history", "target"])
    users = table["user_id"].to_numpy()
    targets = table["target"].to_numpy()
    offsets = table["history"].combine_chunks().offsets.to_numpy()
    values = table["history"].combine_chunks().values.to_numpy()
    lengths = np.diff(offsets)
    order = np.lexsort((lengths, users))  # by user, shortest history first
    first_row = order[np.r_[True, users[order][1:] != users[order][:-1]]]
    first_items = values[offsets[first_row]]
    return (np.bincount(targets, minlength=n_items) + np.bincount(first_items, minlength=n_items)).astype(np.int64)


def popularity_tiers(counts: np.ndarray, cold_max: int = COLD_MAX) -> np.ndarray:
    """Per item: "head", "torso", "tail" by cumulative share of training interactions (thirds), or "cold"."""
    order = np.argsort(-counts, kind="stable")
    total = counts.sum()
    # an item belongs to the third in which its interactions start (so one huge item is head, not torso)
    start_share = (np.cumsum(counts[order]) - counts[order]) / max(total, 1)
    tiers_sorted = np.where(start_share < 1 / 3, "head", np.where(start_share < 2 / 3, "torso", "tail"))
    tiers = np.empty(len(counts), dtype=object)
    tiers[order] = tiers_sorted
    tiers[counts <= cold_max] = "cold"
    return tiers


def quantile_buckets(values: np.ndarray, quantiles: tuple[float, ...]) -> np.ndarray:
    """Integer ``values`` cut at their ``quantiles`` (upper edges, inclusive; equal edges merge) -> labels
    such as "1-4", "5", "6-7", "8+"."""
    values = np.asarray(values, dtype=np.int64)
    edges = sorted({int(math.ceil(np.quantile(values, q))) for q in quantiles})
    edges = [e for e in edges if e < values.max()]
    lows = [int(values.min())] + [e + 1 for e in edges]
    highs = edges + [None]
    labels = np.empty(len(values), dtype=object)
    for low, high in zip(lows, highs):
        label = f"{low}+" if high is None else (f"{low}" if low == high else f"{low}-{high}")
        inside = (values >= low) & ((values <= high) if high is not None else True)
        labels[inside] = label
    return labels


def history_lengths(interactions_path: Path, users: np.ndarray) -> np.ndarray:
    """Items before each user's test target: the user's whole sequence minus the target."""
    table = pq.read_table(interactions_path, columns=["user_id"])
    counts = np.bincount(table["user_id"].to_numpy(), minlength=int(users.max()) + 1)
    return counts[users] - 1


def first_level_group_sizes(ids_path: Path) -> dict[int, int]:
    """item -> how many items share its first-level code, from an ID table (item_id, c1, ...)."""
    table = pq.read_table(ids_path, columns=["item_id", "c1"])
    items, first = table["item_id"].to_numpy(), table["c1"].to_numpy()
    sizes = np.bincount(first)
    return dict(zip(items.tolist(), sizes[first].tolist()))


TERTILE_NAMES = ("small", "middle", "large")


def slice_order(labels) -> list[str]:
    """Slices in reading order: popularity tiers from head to cold, tertiles from small to large, numeric
    buckets from small to large."""
    present = set(labels)
    for fixed in (("head", "torso", "tail", "cold"), TERTILE_NAMES):
        if present <= set(fixed):
            return [s for s in fixed if s in present]
    return sorted(present, key=lambda s: int(re.match(r"\d+", s).group()))


# ----- the comparison within slices --------------------------------------------------------------
def _cell(ndcg: np.ndarray, hit: np.ndarray, base_ndcg: np.ndarray | None, inside: np.ndarray) -> dict:
    cell = {"users": int(inside.sum()), "ndcg@10": float(ndcg[inside].mean()) if inside.any() else float("nan"),
            "recall@10": float(hit[inside].mean()) if inside.any() else float("nan")}
    if base_ndcg is None:
        return cell
    base = float(base_ndcg[inside].mean()) if inside.any() else float("nan")
    cell["baseline_ndcg@10"] = base
    cell["relative_ndcg@10"] = cell["ndcg@10"] / base - 1.0 if base > 0 else float("nan")
    if inside.sum() < 2:
        cell["paired_t_p"] = cell["wilcoxon_p"] = float("nan")
    else:
        cell["paired_t_p"], cell["wilcoxon_p"] = paired_tests(ndcg[inside], base_ndcg[inside])
    return cell


def compare_slices(ranks: dict[str, Path], baseline: str | None, shared: dict[str, dict[int, str]],
                   per_method: dict[str, dict[str, dict[int, str]]] | None = None,
                   ranges: dict[str, dict[str, dict[str, str]]] | None = None) -> dict:
    """Per family and slice: each method's NDCG@10 / Recall@10 over the slice's users, and against ``baseline``
    over the same users.

    ``shared``: family -> {user: slice} for families every method shares (popularity, history);
    ``per_method``: family -> method -> {user: slice} for families defined by each method's own data (the
    prefix groups of its IDs); a method without an entry has no row in that family. ``ranges``: family -> method
    -> {slice: what it spans}, kept in the cells (the prefix tertiles' group sizes differ per method)."""
    gains, users_ref = {}, None
    for method, path in ranks.items():
        users, r = load_ranks(path)
        if users_ref is None:
            users_ref = users
        elif not np.array_equal(users, users_ref):
            raise ValueError(f"{path}: ranks a different set of users than the other methods")
        hit, ndcg = user_gains(r, 10)
        gains[method] = (ndcg, hit)
    base_ndcg = gains[baseline][0] if baseline in gains else None
    out = {"baseline": baseline if base_ndcg is not None else None, "cold_max": COLD_MAX, "families": {}}
    families = {f: {m: labels for m in ranks} for f, labels in shared.items()}
    families.update(per_method or {})
    for family in [f for f in FAMILIES if f in families]:
        rows = {}
        for method, labels in families[family].items():
            missing = [int(u) for u in users_ref if int(u) not in labels]
            if missing:
                raise ValueError(f"slice family {family!r}: {len(missing)} test user(s) have no slice "
                                 f"(e.g. {missing[:3]})")
            per_user = np.array([labels[int(u)] for u in users_ref], dtype=object)
            ndcg, hit = gains[method]
            spans = (ranges or {}).get(family, {}).get(method, {})
            rows[method] = {s: {**_cell(ndcg, hit, base_ndcg if method != baseline else None, per_user == s),
                                **({"range": spans[s]} if s in spans else {})} for s in slice_order(per_user)}
        out["families"][family] = {"title": FAMILY_TITLES[family], "methods": rows}
    out["comparisons"] = adjust_for_all_cells(out)
    return out


def adjust_for_all_cells(result: dict) -> int:
    """Holm-adjust (``comparison.holm``) the paired t-test and the Wilcoxon p-values over every tested cell of every
    family, one family of comparisons apart from the report's main table: a cell's ``paired_t_p_holm`` and
    ``wilcoxon_p_holm``. Returns the number of cells tested."""
    cells = [c for block in result["families"].values() for row in block["methods"].values() for c in row.values()
             if not math.isnan(c.get("paired_t_p", float("nan")))]
    for test in ("paired_t_p", "wilcoxon_p"):
        for cell, adjusted in zip(cells, holm([c[test] for c in cells])):
            cell[f"{test}_holm"] = float(adjusted)
    return len(cells)


def shared_slices(train_path: Path, test_path: Path, interactions_path: Path,
                  n_items: int) -> dict[str, dict[int, str]]:
    """The popularity and history families for the test users of ``test_path``."""
    test = pq.read_table(test_path, columns=["user_id", "target"])
    users, targets = test["user_id"].to_numpy(), test["target"].to_numpy()
    tiers = popularity_tiers(training_counts(train_path, n_items))
    lengths = quantile_buckets(history_lengths(interactions_path, users), (0.25, 0.5, 0.75))
    return {"popularity": dict(zip(users.tolist(), tiers[targets].tolist())),
            "history": dict(zip(users.tolist(), lengths.tolist()))}


def prefix_slices(test_path: Path, ids_path: Path) -> tuple[dict[int, str], dict[str, str]]:
    """The prefix family for one method: tertiles ("small", "middle", "large") of the target's first-level group
    size in ``ids_path``, and the group sizes each tertile spans ({"small": "4-16 items", ...})."""
    test = pq.read_table(test_path, columns=["user_id", "target"])
    users, targets = test["user_id"].to_numpy(), test["target"].to_numpy()
    sizes = first_level_group_sizes(ids_path)
    buckets = quantile_buckets(np.array([sizes[int(t)] for t in targets]), (1 / 3, 2 / 3))
    spans = sorted(set(buckets), key=lambda s: int(re.match(r"\d+", s).group()))
    names = dict(zip(spans, TERTILE_NAMES)) if len(spans) <= len(TERTILE_NAMES) else {s: s for s in spans}
    return (dict(zip(users.tolist(), [names[b] for b in buckets])),
            {names[s]: f"{s} item" + ("" if s == "1" else "s") for s in spans})


# ----- what the report prints ---------------------------------------------------------------------
def _stars(cell: dict) -> str:
    p = max(cell.get("paired_t_p_holm", float("nan")), cell.get("wilcoxon_p_holm", float("nan")))
    return "" if math.isnan(p) else "**" if p < 0.01 else "*" if p < 0.05 else ""


def markdown(result: dict) -> str:
    """One compact table per family: NDCG@10 per slice, the change against the baseline over the same users
    (* both paired tests' Holm-adjusted p < 0.05, ** < 0.01), and the users behind each cell."""
    baseline = result["baseline"]
    parts = []
    for family, block in result["families"].items():
        rows = block["methods"]
        slices = list(dict.fromkeys(s for row in rows.values() for s in row))
        shared_counts = {s: {row[s]["users"] for row in rows.values() if s in row} for s in slices}
        same = all(len(c) == 1 for c in shared_counts.values())
        head = "| method | " + " | ".join(f"{s} ({next(iter(shared_counts[s])):,} users)" if same else s
                                         for s in slices) + " |"
        note = "" if same else " (in brackets: the cell's users" + ("; the group sizes its tertile spans)" if any(
            "range" in c for row in rows.values() for c in row.values()) else ")")
        lines = [f"**By {block['title']}**" + note + "\n", head,
                 "| --- " * (len(slices) + 1) + "|"]
        for method, row in rows.items():
            cells = []
            for s in slices:
                c = row.get(s)
                if c is None:
                    cells.append("—")
                    continue
                text = f"{c['ndcg@10']:.4f}"
                if "relative_ndcg@10" in c and not math.isnan(c["relative_ndcg@10"]):
                    text += f" ({c['relative_ndcg@10']:+.0%}{_stars(c)})"
                elif "baseline_ndcg@10" in c:  # the baseline scored 0 here: the absolute difference
                    text += f" (Δ {c['ndcg@10'] - c['baseline_ndcg@10']:+.4f}{_stars(c)})"
                if not same:
                    text += f" [{c['users']:,}" + (f"; {c['range']}" if "range" in c else "") + "]"
                cells.append(text)
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    intro = (f"NDCG@10 within each slice of the test users; in brackets the change against {baseline} over the "
             "same users (* both paired tests p < 0.05, ** p < 0.01, each adjusted by Holm's step-down method for the "
             f"{result['comparisons']} cells of these tables together). Popularity counts the training split only: "
             "head, torso and tail each hold a third of the training interactions; cold targets have at most "
             f"{result['cold_max']} training interactions. History buckets are the quartiles of the users' history "
             "lengths; prefix buckets are the tertiles of the target's first-level group size in each method's own "
             "IDs.")
    return intro + "\n\n" + "\n\n".join(parts) + "\n"
