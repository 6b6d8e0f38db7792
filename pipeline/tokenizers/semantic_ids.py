"""Semantic IDs: RQ-VAE codes plus TIGER's collision token, and statistics about them.

TIGER (Rajput et al., 2023, §3.1) appends one extra token c_dup to every item's codes
(c_1..c_L) so that items the RQ-VAE maps to the same tuple still get distinct IDs:
the items of a colliding group get c_dup = 0, 1, 2, ... and every other item gets 0.
The collision token shares the codebook's vocabulary size K, so a group may hold at most
K items; a larger group means the tokenizer is too coarse for the catalogue.

Collision-rate definition (shared with ``pipeline.tokenizers.rqvae``, which imports it from here):
    collision_rate = n_colliding_items / N,
where an item is *colliding* when at least one other item has exactly the same
(c_1..c_L) tuple, i.e. the fraction of items that are NOT alone with their tuple.
(With this definition two items sharing a tuple count as 2 colliding items; the
alternative 1 - n_unique_tuples / N would count them as 1.)

Everything here is vectorised numpy (one sort, no Python loop over items), so its cost is a sort's
at any catalogue size. No torch import: the module stays cheap to import and test.
The item -> ID table's file format (``write_id_table`` / ``read_id_table``) lives here too.
"""
from __future__ import annotations

import numpy as np

from pipeline.errors import UserError
from pipeline.io import write_parquet

__all__ = [
    "SemanticIdError",
    "assign_collision_tokens",
    "assert_unique",
    "collision_stats",
    "codebook_utilisation",
    "semantic_id_stats",
    "write_id_table",
    "read_id_table",
]


class SemanticIdError(UserError, ValueError):
    """Semantic IDs cannot be made (or are not) unique; the message says what to change."""


def _as_code_matrix(codes, name: str = "codes") -> np.ndarray:
    """Check for a 2-D integer matrix and return it as int64 (no copy when already int64)."""
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise SemanticIdError(f"{name}: expected a 2-D (items x levels) matrix, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SemanticIdError(f"{name}: expected integer codes, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _group_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group identical rows with one stable sort.

    Returns ``(order, starts, sizes)``: ``rows[order]`` is sorted lexicographically with equal
    rows kept in row-index order (this is what makes the collision token follow item-id order),
    ``starts`` are the positions in ``order`` where each group begins and ``sizes`` their lengths.
    """
    n, width = rows.shape
    if n == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    lo = rows.min(axis=0) if width else np.zeros(0, dtype=np.int64)
    span = (rows.max(axis=0) - lo + 1) if width else np.zeros(0, dtype=np.int64)
    # Fast path: pack each row into one int64 key (mixed radix) when it cannot overflow, then a
    # single stable argsort. Python ints in the product so the overflow check itself cannot overflow.
    capacity = 1
    for s in span.tolist():
        capacity *= int(s)
    if capacity < 2**62:
        key = np.zeros(n, dtype=np.int64)
        for col in range(width):
            key = key * int(span[col]) + (rows[:, col] - lo[col])
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        new_group = np.empty(n, dtype=bool)
        new_group[0] = True
        np.not_equal(sorted_key[1:], sorted_key[:-1], out=new_group[1:])
    else:
        # General path: lexsort with the row index as the least significant key, so ties are
        # broken by item id explicitly rather than relying on the sort's stability.
        order = np.lexsort((np.arange(n), *rows.T[::-1]))
        sorted_rows = rows[order]
        new_group = np.empty(n, dtype=bool)
        new_group[0] = True
        np.any(sorted_rows[1:] != sorted_rows[:-1], axis=1, out=new_group[1:])
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, n))
    return order, starts, sizes


def assign_collision_tokens(codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Append TIGER's collision token: (N, L) codes -> (N, L+1) unique semantic IDs.

    Items sharing the same (c_1..c_L) get c_dup = 0, 1, 2, ... in item-id (row index) order;
    every other item gets 0. Raises :class:`SemanticIdError` when a group has more than
    ``codebook_size`` members (c_dup only has K values) or when codes are outside [0, K).
    """
    codes = _as_code_matrix(codes)
    K = int(codebook_size)
    if K < 1:
        raise SemanticIdError(f"codebook_size must be >= 1, got {codebook_size}")
    n, L = codes.shape
    if n and (codes.min() < 0 or codes.max() >= K):
        raise SemanticIdError(f"codes must lie in [0, {K}) (codebook_size={K}); "
                              f"got values in [{codes.min()}, {codes.max()}]")
    ids = np.empty((n, L + 1), dtype=np.int64)
    ids[:, :L] = codes
    if n == 0:
        return ids
    order, starts, sizes = _group_rows(codes)
    largest = int(sizes.max())
    if largest > K:
        worst = int(np.argmax(sizes))
        tuple_codes = tuple(int(c) for c in codes[order[starts[worst]]])
        n_over = int((sizes > K).sum())
        raise SemanticIdError(
            f"{n_over} code tuple(s) are shared by more than codebook_size={K} items; the largest group has "
            f"{largest} items with codes {tuple_codes}, but the collision token only has {K} values. "
            f"Use more levels or a larger codebook (params tokenizers.<name>.levels / "
            f"tokenizers.<name>.codebook_size), "
            f"or check the RQ-VAE for codebook collapse (low util_l* in the tokenize@<name> metrics).")
    # Rank within the group = position in the sorted order minus the group's start position.
    group_of_sorted = np.repeat(np.arange(len(starts)), sizes)
    rank_sorted = np.arange(n) - starts[group_of_sorted]
    ids[order, L] = rank_sorted
    return ids


def assert_unique(ids: np.ndarray) -> None:
    """Raise :class:`SemanticIdError` if two rows of ``ids`` (N, L+1) are identical."""
    ids = _as_code_matrix(ids, "ids")
    order, starts, sizes = _group_rows(ids)
    if len(sizes) == 0 or sizes.max() <= 1:
        return
    dup = np.flatnonzero(sizes > 1)
    first = int(dup[0])
    rows = np.sort(order[starts[first]:starts[first] + sizes[first]])
    raise SemanticIdError(
        f"semantic IDs are not unique: {len(dup)} ID(s) are shared by several items, e.g. "
        f"{tuple(int(c) for c in ids[rows[0]])} by items {rows[:10].tolist()}")


def collision_stats(codes: np.ndarray) -> dict:
    """Collision statistics of (N, L) codes *before* the collision token (definition: module docstring)."""
    codes = _as_code_matrix(codes)
    n = codes.shape[0]
    _, _, sizes = _group_rows(codes)
    n_colliding = int(sizes[sizes > 1].sum()) if n else 0
    return {
        "collision_rate": n_colliding / n if n else 0.0,
        "n_colliding_items": n_colliding,
        "largest_group": int(sizes.max()) if n else 0,
        "n_unique_tuples": int(len(sizes)),
    }


def codebook_utilisation(codes: np.ndarray, codebook_size: int) -> list[float]:
    """Per level, the share of the K codes used by at least one item."""
    codes = _as_code_matrix(codes)
    K = int(codebook_size)
    return [len(np.unique(codes[:, level])) / K for level in range(codes.shape[1])]


def semantic_id_stats(codes: np.ndarray, ids: np.ndarray, codebook_size: int) -> dict:
    """Summary of a tokenization (all values are plain Python numbers, ready for a metrics JSON).

    ``utilisation_l1..l{L}``: share of the K codes used per level; ``collision_rate``,
    ``largest_group`` and ``n_colliding_items``: of the codes before the collision token;
    ``unique_ids``: whether the IDs after the token are unique; ``max_dup_token``: largest c_dup.
    """
    codes = _as_code_matrix(codes)
    ids = _as_code_matrix(ids, "ids")
    n, L = codes.shape
    if ids.shape != (n, L + 1):
        raise SemanticIdError(f"ids: expected shape {(n, L + 1)} for codes of shape {codes.shape}, got {ids.shape}")
    stats: dict = {f"utilisation_l{level + 1}": u
                   for level, u in enumerate(codebook_utilisation(codes, codebook_size))}
    coll = collision_stats(codes)
    stats["collision_rate"] = coll["collision_rate"]
    stats["largest_group"] = coll["largest_group"]
    stats["n_colliding_items"] = coll["n_colliding_items"]
    _, _, id_sizes = _group_rows(ids)
    stats["unique_ids"] = bool(n == 0 or id_sizes.max() == 1)
    stats["max_dup_token"] = int(ids[:, L].max()) if n else 0
    return stats


# ----- the item -> ID table (Parquet: item_id, c1 .. cL, c_dup), as semantic_ids@<t> and model folders store it
def write_id_table(ids: np.ndarray, path) -> None:
    """Write (N, L+1) IDs in item-id order; sorted, fixed settings: the same IDs give the same bytes."""
    import polars as pl

    ids = _as_code_matrix(ids, "ids")
    L = ids.shape[1] - 1
    write_parquet(pl.DataFrame({"item_id": np.arange(len(ids), dtype=np.int32),
                                **{f"c{level + 1}": ids[:, level].astype(np.int32) for level in range(L)},
                                "c_dup": ids[:, L].astype(np.int32)}), path)


def read_id_table(path, n_items: int | None = None) -> np.ndarray:
    """(N, L+1) IDs in item-id order; refuses a table without exactly one row per item 0..N-1."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).sort_by("item_id")
    items = table["item_id"].to_numpy()
    expected = len(items) if n_items is None else n_items
    if not np.array_equal(items, np.arange(expected)):
        raise SemanticIdError(f"{path}: expected one row per item 0..{expected - 1}, got {len(items)} rows"
                              + (f" with item ids {items.min()}..{items.max()}" if len(items) else ""))
    return np.stack([table[c].to_numpy() for c in table.column_names if c != "item_id"], axis=1).astype(np.int64)
