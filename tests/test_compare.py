"""The comparison behind reports/comparison.md and the seed studies."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from pipeline.evaluation.comparison import compare, holm, markdown, paired_bootstrap


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


def test_holm_adjusts_a_hand_computed_family():
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04, raised to 0.06: step-down
    # adjusted p-values never decrease in the order of the raw ones); NaN: not tested, not counted in m
    assert holm([0.01, 0.04, 0.03, 0.005, float("nan")]) == pytest.approx([0.03, 0.06, 0.06, 0.02, float("nan")],
                                                                           nan_ok=True)
    assert holm([0.5, 0.6]).tolist() == [1.0, 1.0]  # capped at 1
    assert holm([0.02]).tolist() == [0.02] and holm([]).tolist() == []


def test_the_bootstrap_interval_is_paired_over_users_and_repeats():
    """Per-user scores of two methods that move together: the paired interval of the mean difference has the
    width normal theory gives for the per-user differences (a resampling that broke the pairs would be ~20 times
    wider), it holds the estimate, and a second run gives the same figures."""
    rng = np.random.default_rng(1)
    a = rng.random(5000)
    b = a - 0.01 + rng.normal(0, 0.02, 5000)
    out = paired_bootstrap(a, b)
    low, high = out["ndcg@10_difference_ci"]
    half_width = stats.norm.ppf(0.975) * np.std(a - b, ddof=1) / np.sqrt(len(a))
    assert low < out["ndcg@10_difference"] < high
    assert (high - low) / 2 == pytest.approx(half_width, rel=0.1)
    rel_low, rel_high = out["relative_ndcg@10_ci"]
    assert rel_low < a.mean() / b.mean() - 1 < rel_high
    assert paired_bootstrap(a, b) == out
    assert paired_bootstrap(a, a)["ndcg@10_difference_ci"] == [0.0, 0.0]


def test_the_table_prints_intervals_and_holm_adjusted_p_values(tmp_path):
    """Three methods against the baseline: the table's and the separation's p-values are Holm's, so two methods whose
    raw p-values are below 0.05 (about 0.028 each) but whose adjusted ones are not (0.056) are not separated."""
    n = 2000
    base = np.zeros(n, dtype=np.int64)
    base[:100] = 1  # 100 hits at rank 1 (NDCG 1), 1,900 misses

    def swapped(lost: range, gained: range) -> np.ndarray:  # 39 hits lost, 61 gained: z = 22 / sqrt(100) = 2.2
        ranks = base.copy()
        ranks[list(lost)], ranks[list(gained)] = 0, 1
        return ranks

    better = swapped(range(0), range(300, 800))
    result = compare({"tiger": [ranks_file(tmp_path / "t.parquet", base)],
                      "decor": [ranks_file(tmp_path / "d.parquet", better)],
                      "tweak": [ranks_file(tmp_path / "w.parquet", swapped(range(0, 39), range(100, 161)))],
                      "nudge": [ranks_file(tmp_path / "n.parquet", swapped(range(50, 89), range(200, 261)))]},
                     "tiger")
    rows = result["methods"]
    assert result["comparisons"] == 3
    for test in ("paired_t_p", "wilcoxon_p"):
        raw = [rows[m][test] for m in ("decor", "tweak", "nudge")]
        assert [rows[m][f"{test}_holm"] for m in ("decor", "tweak", "nudge")] == holm(raw).tolist()
        assert 0.025 < rows["tweak"][test] < 0.05 <= rows["tweak"][f"{test}_holm"], raw  # what this case is about
    table = markdown(result)
    head, _, tiger, decor, tweak = table.splitlines()[:5]
    assert "| ΔN@10 [95 % CI] | N@10 vs tiger [95 % CI] | t-test p (Holm) | Wilcoxon p (Holm) |" in head
    low, high = rows["decor"]["ndcg@10_difference_ci"]
    assert f"| {rows['decor']['ndcg@10_difference']:+.4f} [{low:+.4f}, {high:+.4f}] |" in decor
    assert f"| {rows['tweak']['paired_t_p_holm']:.3g} | {rows['tweak']['wilcoxon_p_holm']:.3g} |" in tweak
    assert tiger.endswith("| — | — | — | — |")
    separated, _, rest = table.split("**What this comparison separates**")[1].partition("Not separated:")
    assert "decor" in separated and "tweak" in rest and "nudge" in rest
