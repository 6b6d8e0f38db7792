"""Collision tokens and semantic-ID statistics (pipeline/tokenizers/semantic_ids.py)."""
from __future__ import annotations

import time

import numpy as np
import pytest

from pipeline.tokenizers.semantic_ids import (
    SemanticIdError,
    assert_unique,
    assign_collision_tokens,
    codebook_utilisation,
    collision_stats,
    semantic_id_stats,
)


def test_hand_example_tokens_follow_item_order():
    codes = np.array([[1, 2, 3], [0, 0, 0], [1, 2, 3], [1, 2, 3]])
    ids = assign_collision_tokens(codes, 4)
    assert ids.shape == (4, 4)
    assert np.array_equal(ids[:, :3], codes)
    assert ids[:, 3].tolist() == [0, 0, 1, 2]
    assert_unique(ids)


def test_two_groups_interleaved():
    codes = np.array([[5, 1], [2, 2], [5, 1], [2, 2], [7, 7], [2, 2], [5, 1]])
    assert assign_collision_tokens(codes, 8)[:, 2].tolist() == [0, 0, 1, 1, 0, 2, 2]


def test_ids_unique_on_random_codes():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 4, size=(3000, 3))  # 64 tuples: heavy collisions
    ids = assign_collision_tokens(codes, 128)  # groups of ~47, below K
    assert_unique(ids)
    assert np.array_equal(ids[:, :3], codes)
    # Within each group the tokens are 0..size-1 in item-id order.
    for key in {tuple(r) for r in codes[:50]}:
        rows = np.flatnonzero((codes == key).all(axis=1))
        assert ids[rows, 3].tolist() == list(range(len(rows)))


def test_stability_and_unrelated_permutation():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 3, size=(200, 2))
    first = assign_collision_tokens(codes, 200)
    assert np.array_equal(first, assign_collision_tokens(codes.copy(), 200))
    # Shuffle the rows that are not in group (0, 0): the group's tokens are unchanged.
    in_group = (codes == [0, 0]).all(axis=1)
    others = np.flatnonzero(~in_group)
    permuted = codes.copy()
    permuted[others] = codes[rng.permutation(others)]
    second = assign_collision_tokens(permuted, 200)
    assert np.array_equal(second[in_group], first[in_group])
    # Moving the group's members keeps their relative order: the first-placed gets 0, and so on.
    order = rng.permutation(len(codes))
    moved = assign_collision_tokens(codes[order], 200)
    group_rows = np.flatnonzero((codes[order] == [0, 0]).all(axis=1))
    assert moved[group_rows, 2].tolist() == list(range(in_group.sum()))


def test_over_k_group_raises_with_suggestion():
    codes = np.array([[1, 1]] * 5 + [[0, 1]] * 3)
    assign_collision_tokens(codes[:4], 4)  # a group of exactly K is fine
    with pytest.raises(SemanticIdError) as err:
        assign_collision_tokens(codes, 4)
    msg = str(err.value)
    assert "5 items" in msg and "(1, 1)" in msg
    assert "tokenizers.<name>.levels" in msg and "tokenizers.<name>.codebook_size" in msg
    assert isinstance(err.value, ValueError)


def test_bad_codes_rejected():
    with pytest.raises(SemanticIdError):
        assign_collision_tokens(np.array([1, 2, 3]), 4)  # not 2-D
    with pytest.raises(SemanticIdError):
        assign_collision_tokens(np.array([[0.5, 1.0]]), 4)  # not integers
    with pytest.raises(SemanticIdError, match="codebook_size"):
        assign_collision_tokens(np.array([[0, 4]]), 4)  # outside [0, K)


def test_empty_input():
    ids = assign_collision_tokens(np.zeros((0, 3), dtype=np.int64), 8)
    assert ids.shape == (0, 4)
    assert_unique(ids)


def test_assert_unique_detects_duplicates():
    ids = np.array([[1, 2, 0], [3, 3, 0], [1, 2, 0]])
    with pytest.raises(SemanticIdError, match=r"items \[0, 2\]"):
        assert_unique(ids)
    assert_unique(ids[:2])


def test_large_codes_path_without_packing():
    # Values spanning > 2^62 combinations take the lexsort path; results must match the packed path.
    rng = np.random.default_rng(2)
    small = rng.integers(0, 3, size=(500, 3))
    big = small * (2**40)  # same grouping, huge spans
    big[:, 0] += 2**20
    a = assign_collision_tokens(small, 500)[:, 3]
    b = assign_collision_tokens(big, 2**62)[:, 3]
    assert np.array_equal(a, b)


def test_stats_hand_example():
    codes = np.array([[1, 2, 3], [0, 0, 0], [1, 2, 3], [1, 2, 3], [1, 0, 0]])
    ids = assign_collision_tokens(codes, 4)
    stats = semantic_id_stats(codes, ids, 4)
    assert stats == {
        "utilisation_l1": 2 / 4,  # codes {0, 1}
        "utilisation_l2": 2 / 4,  # {0, 2}
        "utilisation_l3": 2 / 4,  # {0, 3}
        "collision_rate": 3 / 5,  # items 0, 2, 3 share (1, 2, 3)
        "largest_group": 3,
        "n_colliding_items": 3,
        "unique_ids": True,
        "max_dup_token": 2,
    }
    # Before the token the IDs are not unique.
    no_token = np.concatenate([codes, np.zeros((5, 1), dtype=np.int64)], axis=1)
    assert semantic_id_stats(codes, no_token, 4)["unique_ids"] is False
    assert codebook_utilisation(codes, 4) == [0.5, 0.5, 0.5]


def test_collision_rate_counts_every_member_of_a_group():
    # Two pairs and one singleton: 4 of 5 items are not alone with their tuple.
    codes = np.array([[0, 1], [0, 1], [2, 2], [2, 2], [3, 3]])
    stats = collision_stats(codes)
    assert stats == {"collision_rate": 0.8, "n_colliding_items": 4, "largest_group": 2, "n_unique_tuples": 3}
    assert collision_stats(np.array([[0, 1], [1, 0]]))["collision_rate"] == 0.0


def test_million_items_is_fast():
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, size=(1_000_000, 3))
    codes[:1000] = [7, 7, 7]  # one big group
    start = time.perf_counter()
    ids = assign_collision_tokens(codes, 2048)
    elapsed = time.perf_counter() - start
    assert ids[:1000, 3].tolist() == list(range(1000))
    assert_unique(ids)
    # Target is < 1 s; the bound leaves headroom for a loaded CI machine.
    assert elapsed < 3.0, f"assign_collision_tokens took {elapsed:.2f} s for 10^6 items"
