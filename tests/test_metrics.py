"""Recall/NDCG/invalid@K against a hand computation."""
import math

import numpy as np
import pytest

from pipeline.evaluation.metrics import INVALID, mask_seen, ranking_metrics, target_ranks


def test_metrics_equal_a_hand_computation():
    ranked = np.array([
        [7, 3, 9, 1, 4, 2, 8, 6, 5, 0],  # target 7 at rank 1
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],  # target 6 at rank 6
        [INVALID, 5, INVALID, 2, 9, 3, 4, 0, 1, 8],  # target 9 at rank 5; two invalid slots in top 5
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 0],  # target 11 absent
    ])
    targets = np.array([7, 6, 9, 11])
    assert target_ranks(ranked, targets).tolist() == [1, 6, 5, 0]
    m = ranking_metrics(ranked, targets)
    assert m["recall@5"] == pytest.approx(2 / 4)
    assert m["recall@10"] == pytest.approx(3 / 4)
    assert m["ndcg@5"] == pytest.approx((1 + 1 / math.log2(6)) / 4)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(7) + 1 / math.log2(6)) / 4)
    assert m["invalid@5"] == pytest.approx(2 / 20)
    assert m["invalid@10"] == pytest.approx(2 / 40)


def test_invalid_slot_never_matches_and_short_lists_are_refused():
    assert target_ranks(np.array([[INVALID, 3]]), np.array([INVALID])).tolist() == [0]
    with pytest.raises(ValueError, match="fewer than K=10"):
        ranking_metrics(np.zeros((2, 5), dtype=int), np.zeros(2, dtype=int))


def test_mask_seen_removes_history_items_and_shifts_the_rest_up():
    ranked = np.array([[4, 1, 2, 3], [5, 6, 7, 8]])
    out = mask_seen(ranked, [np.array([1, 3]), np.array([9])])
    assert out.tolist() == [[4, 2, INVALID, INVALID], [5, 6, 7, 8]]
