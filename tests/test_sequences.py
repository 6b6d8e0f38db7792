"""The 5-core / ordering / leave-one-out protocol of docs/method_reference.md §1, on small frames built here."""
import numpy as np
import polars as pl
import pytest

from pipeline.data.readers import DataError
from pipeline.data.sequences import build_sequences, leave_one_out


def frame(rows):
    return pl.DataFrame(rows, schema={"user": pl.String, "item": pl.String, "timestamp": pl.Int64}, orient="row")


def brute_force_kcore(rows, k):
    pairs = {(u, i) for u, i, _ in rows}
    while True:
        users, items = {}, {}
        for u, i in pairs:
            users[u] = users.get(u, 0) + 1
            items[i] = items.get(i, 0) + 1
        keep = {(u, i) for u, i in pairs if users[u] >= k and items[i] >= k}
        if keep == pairs:
            return keep
        pairs = keep


def test_kcore_needs_more_than_one_pass():
    # Users a..e each rate items 1..3 (a 3-core block). User f rates 1, 2 and the rare item 9, which
    # only f and g rate; g also rates 1, 2. With k=3 the first pass drops item 9 (2 ratings), which
    # pushes f and g under 3 items: only a second pass removes them.
    rows = [(u, i, t) for t, (u, i) in enumerate((u, i) for u in "abcde" for i in "123")]
    rows += [("f", "1", 50), ("f", "2", 51), ("f", "9", 52), ("g", "1", 53), ("g", "2", 54), ("g", "9", 55)]
    seq = build_sequences(frame(rows), k=3)
    kept = {(u, i) for u, i in seq.interactions.join(seq.users, on="user_id").join(seq.items, on="item_id")
            .select("raw_user_id", "raw_item_id").iter_rows()}
    assert kept == brute_force_kcore(rows, 3)
    assert {u for u, _ in kept} == set("abcde")
    assert seq.kcore_rounds >= 2


def test_kcore_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    rows = [(f"u{rng.integers(60)}", f"i{int(rng.zipf(1.6)) % 80}", int(t)) for t in range(1500)]
    seq = build_sequences(frame(rows), k=5)
    kept = {(u, i) for u, i in seq.interactions.join(seq.users, on="user_id").join(seq.items, on="item_id")
            .select("raw_user_id", "raw_item_id").iter_rows()}
    assert kept == brute_force_kcore(rows, 5)


def test_ties_keep_file_order_and_repeats_keep_earliest():
    # Same timestamp for z, y, x (file order) - never reorder them by item id. "y" repeats later and
    # at an equal timestamp: the earliest (first line) copy is the one kept.
    rows = [("u", "z", 10), ("u", "y", 10), ("u", "x", 10), ("u", "w", 5), ("u", "y", 10), ("u", "v", 20),
            ("u", "y", 30)]
    seq = build_sequences(frame(rows), k=1)
    order = seq.interactions.join(seq.items, on="item_id").sort("position")["raw_item_id"].to_list()
    assert order == ["w", "z", "y", "x", "v"]
    assert seq.duplicates_dropped == 2


def test_dense_ids_follow_numeric_order_when_ids_are_integers():
    rows = [(str(u), str(i), u * 10 + i) for u in (10, 2, 1) for i in (0, 10, 9, 100)]
    seq = build_sequences(frame(rows), k=1)
    assert seq.items["raw_item_id"].to_list() == ["0", "9", "10", "100"]
    assert seq.users["raw_user_id"].to_list() == ["1", "2", "10"]


def test_empty_after_kcore_is_an_error_that_says_what_to_do():
    with pytest.raises(DataError, match="lower filter.k"):
        build_sequences(frame([("u", "i", 1), ("v", "j", 2)]), k=5)


def test_leave_one_out_exact_samples():
    rows = [("u", it, t) for t, it in enumerate("abcdef")] + [("v", it, t) for t, it in enumerate("abcde")]
    seq = build_sequences(frame(rows), k=1)
    splits = {k: v.to_pylist() for k, v in leave_one_out(seq.interactions, max_history=3).items()}
    a, b, c, d, e, f = range(6)  # dense ids follow the (lexicographic) raw ids
    u = 0
    assert [s for s in splits["test"] if s["user_id"] == u] == [{"user_id": u, "history": [c, d, e], "target": f}]
    assert [s for s in splits["valid"] if s["user_id"] == u] == [{"user_id": u, "history": [b, c, d], "target": e}]
    assert [(s["history"], s["target"]) for s in splits["train"] if s["user_id"] == u] == [
        ([a], b), ([a, b], c), ([a, b, c], d)]
    assert len(splits["train"]) == 3 + 2 and len(splits["test"]) == 2 and len(splits["valid"]) == 2


def test_no_validation_or_test_target_is_a_training_target_of_the_same_user():
    rng = np.random.default_rng(1)
    rows = [(f"u{rng.integers(200)}", f"i{rng.integers(300)}", int(rng.integers(1000))) for _ in range(8000)]
    seq = build_sequences(frame(rows), k=5)
    splits = {k: v.to_pylist() for k, v in leave_one_out(seq.interactions, max_history=20).items()}
    train = {}
    for s in splits["train"]:
        train.setdefault(s["user_id"], set()).add(s["target"])
    held_out = [(s["user_id"], s["target"]) for s in splits["valid"] + splits["test"]]
    assert held_out and all(t not in train.get(uid, set()) for uid, t in held_out)
    # every history strictly precedes its target in the user's sequence, and is at most 20 long
    seqs = {uid: g.sort("position")["item_id"].to_list() for (uid,), g in seq.interactions.group_by("user_id")}
    for s in splits["train"] + splits["valid"] + splits["test"]:
        full = seqs[s["user_id"]]
        t = full.index(s["target"])
        assert s["history"] == full[max(0, t - 20):t]
    # the test target is each user's last item, the validation target the one before
    assert all(seqs[s["user_id"]][-1] == s["target"] for s in splits["test"])
    assert all(seqs[s["user_id"]][-2] == s["target"] for s in splits["valid"])
