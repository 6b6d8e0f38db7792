"""The comparison behind reports/comparison.md and the seed studies."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.evaluation.comparison import compare, markdown


def ranks_file(path, ranks, users=None):
    users = np.arange(len(ranks)) if users is None else np.asarray(users)
    pq.write_table(pa.table({"user_id": users, "target": np.zeros(len(ranks), dtype=np.int64),
                             "rank": np.asarray(ranks)}), path)
    return path


def test_metrics_from_ranks_match_a_hand_computation(tmp_path):
    # ranks 1, 3, 12 (outside top 10), 0 (missed): R@5 = 2/4, R@10 = 2/4, N@10 = (1 + 1/log2(4)) / 4
    f = ranks_file(tmp_path / "a.parquet", [1, 3, 12, 0])
    row = compare({"a": [f]}, None)["methods"]["a"]
    assert row["recall@5"]["mean"] == 0.5 and row["recall@10"]["mean"] == 0.5
    assert math.isclose(row["ndcg@10"]["mean"], (1 + 0.5) / 4)


def test_relative_change_and_paired_tests_against_the_baseline(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    base = rng.integers(0, 30, n)
    better = np.where(rng.random(n) < 0.5, 1, base)  # half the users move to rank 1
    out = compare({"tiger": [ranks_file(tmp_path / "t.parquet", base)],
                   "decor": [ranks_file(tmp_path / "d.parquet", better)],
                   "same": [ranks_file(tmp_path / "s.parquet", base)]}, "tiger")["methods"]
    t, d = out["tiger"]["ndcg@10"]["mean"], out["decor"]["ndcg@10"]["mean"]
    assert math.isclose(out["decor"]["relative_ndcg@10"], d / t - 1)
    assert out["decor"]["paired_t_p"] < 1e-6 and out["decor"]["wilcoxon_p"] < 1e-6
    assert out["same"]["paired_t_p"] == 1.0 and out["same"]["relative_ndcg@10"] == 0.0
    assert math.isnan(out["tiger"]["paired_t_p"])


def test_seeds_give_mean_and_sample_std(tmp_path):
    a = ranks_file(tmp_path / "s1.parquet", [1, 0])   # N@10 = 0.5
    b = ranks_file(tmp_path / "s2.parquet", [0, 0])   # N@10 = 0
    row = compare({"m": [a, b]}, None)["methods"]["m"]
    assert row["ndcg@10"]["mean"] == 0.25 and math.isclose(row["ndcg@10"]["std"], np.std([0.5, 0], ddof=1))
    assert "± 0.3536" in markdown(compare({"m": [a, b]}, None))


def test_runs_over_different_users_are_refused(tmp_path):
    a = ranks_file(tmp_path / "a.parquet", [1, 2], users=[0, 1])
    b = ranks_file(tmp_path / "b.parquet", [1, 2], users=[0, 2])
    with pytest.raises(ValueError, match="b.parquet"):
        compare({"a": [a], "b": [b]}, "a")


def test_training_budget_column_names_each_methods_epochs(tmp_path):
    a = ranks_file(tmp_path / "a.parquet", [1, 0])
    b = ranks_file(tmp_path / "b.parquet", [2, 1])
    table = markdown(compare({"pop": [a], "tiger": [b]}, "tiger"), {"pop": "", "tiger": "8 (best 7)"})
    head, _, pop, tiger = table.strip().splitlines()[:4]
    assert head.startswith("| method | runs | trained | R@5")
    assert pop.startswith("| pop | 1 | — | ") and tiger.startswith("| tiger | 1 | 8 (best 7) | ")
    assert "trained" not in markdown(compare({"pop": [a]}, None))  # seed studies: no column unless given


def test_the_report_says_which_differences_it_separates(tmp_path):
    rng = np.random.default_rng(0)
    n = 400
    base = rng.integers(0, 30, n)
    better = np.where(rng.random(n) < 0.5, 1, base)  # a large gain: both tests p < 1e-6
    slightly = base.copy()
    slightly[:3] = 1  # three users: not separable from chance
    result = compare({"tiger": [ranks_file(tmp_path / "t.parquet", base)],
                      "decor": [ranks_file(tmp_path / "d.parquet", better)],
                      "tweak": [ranks_file(tmp_path / "w.parquet", slightly)]}, "tiger")
    summary = markdown(result).split("**What this comparison separates**")[1]  # the paragraph under the table
    separated, _, rest = summary.partition("Not separated:")
    assert "decor +" in separated and "tweak" not in separated
    assert "tweak" in rest and "decor" not in rest
    assert "What this comparison separates" not in markdown(compare({"a": [ranks_file(tmp_path / "a.parquet", base)]},
                                                                      None))
