"""From raw interactions to k-core user sequences and leave-one-out samples (docs/method_reference.md §1).

Input: a frame (user, item, timestamp) whose row order is the file order. Every rule below is the
papers' protocol:
- a repeated (user, item) pair keeps its earliest interaction (ties: the earlier line);
- iterative k-core on users and items until nothing changes (one pass is not enough);
- per-user chronological order by a *stable* sort: ties keep file order, never item-id order;
- leave-one-out: test target i_n, validation target i_{n-1}, training targets i_2..i_{n-2}, each with
  the most recent ``max_history`` items before it as history.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from pipeline.data.readers import DataError


@dataclass
class Sequences:
    interactions: pl.DataFrame  # user_id, item_id, timestamp, position; sorted by (user_id, position)
    users: pl.DataFrame  # user_id, raw_user_id
    items: pl.DataFrame  # item_id, raw_item_id
    duplicates_dropped: int
    kcore_rounds: int


def _id_order(raw: pl.Series) -> pl.Series:
    """Raw ids in the order dense ids are given: numerically when every id is an integer (so that
    already-dense ids such as LC-Rec's keep their values), otherwise lexicographically."""
    uniq = raw.unique()
    as_int = uniq.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0:
        return uniq.gather(as_int.arg_sort())
    return uniq.sort()


def _dense(raw: pl.Series, name: str) -> pl.DataFrame:
    ordered = _id_order(raw)
    return pl.DataFrame({f"raw_{name}_id": ordered,
                         f"{name}_id": pl.int_range(len(ordered), dtype=pl.Int32, eager=True)})


def build_sequences(raw: pl.DataFrame, k: int, keep_items: pl.Series | None = None) -> Sequences:
    """Dedup, iterative k-core, dense ids and per-user chronological positions.

    ``keep_items``: if given, interactions with other items are dropped before k-core (LC-Rec drops
    items without metadata).
    """
    df = raw.select(
        pl.col("user").cast(pl.String), pl.col("item").cast(pl.String), pl.col("timestamp").cast(pl.Int64)
    ).with_row_index("line")
    if keep_items is not None:
        df = df.filter(pl.col("item").is_in(keep_items.implode()))
    # Integer codes (hashing, not sorting, the strings) make dedup and the k-core rounds cheap; the
    # code -> raw id maps are set aside and the strings dropped from the big frame.
    df = df.with_columns(u=pl.col("user").cast(pl.Categorical).to_physical(),
                         i=pl.col("item").cast(pl.Categorical).to_physical())
    user_map = df.select("u", "user").unique("u")
    item_map = df.select("i", "item").unique("i")
    df = df.drop("user", "item")
    n_before = df.height
    df = df.sort(["u", "timestamp", "line"]).unique(["u", "i"], keep="first", maintain_order=True)
    duplicates = n_before - df.height
    rounds = 0
    while True:
        rounds += 1
        n = df.height
        df = df.filter((pl.len().over("u") >= k) & (pl.len().over("i") >= k))
        if df.height == n:
            break
    if df.height == 0:
        raise DataError(
            f"no interactions left after the {k}-core filter ({n_before} interactions read, "
            f"{duplicates} repeated pairs dropped): lower filter.k, or check that users and items repeat in "
            f"the input (a user id or item id column swapped with another column empties it too)."
        )
    users = _dense(user_map.filter(pl.col("u").is_in(df["u"].unique().implode()))["user"], "user")
    items = _dense(item_map.filter(pl.col("i").is_in(df["i"].unique().implode()))["item"], "item")
    df = (
        df.join(user_map.join(users, left_on="user", right_on="raw_user_id").select("u", "user_id"), on="u")
        .join(item_map.join(items, left_on="item", right_on="raw_item_id").select("i", "item_id"), on="i")
        # (timestamp, line) with line unique: a stable chronological sort, ties in file order.
        .sort(["user_id", "timestamp", "line"])
        .with_columns(position=pl.int_range(pl.len(), dtype=pl.Int32).over("user_id"))
        .select("user_id", "item_id", "timestamp", "position")
    )
    return Sequences(df, users.select("user_id", "raw_user_id"), items.select("item_id", "raw_item_id"),
                     duplicates, rounds)


def _samples(items: np.ndarray, user_of: np.ndarray, starts: np.ndarray, targets: np.ndarray,
             max_history: int) -> pa.Table:
    """Samples whose targets are the flat positions ``targets``; history = up to ``max_history`` items
    before the target within the same user. Built with index arithmetic, no Python loop per sample."""
    users = user_of[targets]
    hist_start = np.maximum(starts[users], targets - max_history)
    lengths = (targets - hist_start).astype(np.int64)
    offsets = np.zeros(len(targets) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # For every history slot, its flat index: hist_start of its sample + its rank inside the sample.
    slot_sample = np.repeat(np.arange(len(targets)), lengths)
    flat = hist_start[slot_sample] + (np.arange(offsets[-1]) - offsets[slot_sample])
    history = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(items[flat], type=pa.int32()))
    return pa.table({
        "user_id": pa.array(users.astype(np.int32)),
        "history": history,
        "target": pa.array(items[targets], type=pa.int32()),
    })


def leave_one_out(interactions: pl.DataFrame, max_history: int) -> dict[str, pa.Table]:
    """Split sorted interactions into train / valid / test sample tables (docs/method_reference.md §1).

    A user with n items gives the test sample (i_1..i_{n-1}) -> i_n, the validation sample
    (i_1..i_{n-2}) -> i_{n-1} and training samples (i_1..i_{t-1}) -> i_t for t = 2..n-2.
    Users with n < 3 (only possible when k < 3) give no validation sample; n < 2 gives nothing.
    """
    items = interactions["item_id"].to_numpy().astype(np.int32)
    user_ids = interactions["user_id"].to_numpy().astype(np.int64)
    n_users = int(user_ids.max()) + 1 if len(user_ids) else 0
    counts = np.bincount(user_ids, minlength=n_users)
    starts = np.zeros(n_users, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    ends = starts + counts  # exclusive
    pos = np.arange(len(items)) - starts[user_ids]  # 0-based position within the user
    n_of = counts[user_ids]
    # 1-based t = pos + 1: train targets t in 2..n-2  <=>  1 <= pos <= n-3
    train_targets = np.flatnonzero((pos >= 1) & (pos <= n_of - 3))
    valid_targets = (ends - 2)[counts >= 3]
    test_targets = (ends - 1)[counts >= 2]
    return {
        "train": _samples(items, user_ids, starts, train_targets, max_history),
        "valid": _samples(items, user_ids, starts, valid_targets, max_history),
        "test": _samples(items, user_ids, starts, test_targets, max_history),
    }


def sequence_stats(seq: Sequences) -> dict:
    n_users, n_items, n = seq.users.height, seq.items.height, seq.interactions.height
    return {
        "users": n_users,
        "items": n_items,
        "interactions": n,
        "sparsity": 1.0 - n / (n_users * n_items) if n_users and n_items else 1.0,
        "mean_length": n / n_users if n_users else 0.0,
        "duplicates_dropped": seq.duplicates_dropped,
        "kcore_rounds": seq.kcore_rounds,
    }
