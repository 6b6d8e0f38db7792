"""Metrics by slice (pipeline/evaluation/slices.py): the slices partition the test users, a slice's NDCG@10 and its
paired test equal a hand computation, and the popularity tiers come from the training split alone."""
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.evaluation import slices


def write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def toy(tmp_path):
    """6 items, 4 users. Sequences (oldest first): u0 0 1 2 0 3 | u1 0 1 0 4 5 | u2 1 0 2 1 0 | u3 0 2 1 0 1 2 5.
    The last item is the test target, the one before it the validation target; the rest is training."""
    seqs = {0: [0, 1, 2, 0, 3], 1: [0, 1, 0, 4, 5], 2: [1, 0, 2, 1, 0], 3: [0, 2, 1, 0, 1, 2, 5]}
    train = {"user_id": [], "history": [], "target": []}
    for u, s in seqs.items():
        for t in range(1, len(s) - 2):
            train["user_id"].append(u), train["history"].append(s[:t]), train["target"].append(s[t])
    inter = {"user_id": [u for u, s in seqs.items() for _ in s], "item_id": [i for s in seqs.values() for i in s]}
    test = {"user_id": list(seqs), "history": [s[:-1] for s in seqs.values()], "target": [s[-1] for s in seqs.values()]}
    return {"train": write(tmp_path / "train.parquet", **train),
            "test": write(tmp_path / "test.parquet", **test),
            "interactions": write(tmp_path / "interactions.parquet", **inter),
            "tmp": tmp_path, "seqs": seqs}


def test_training_counts_read_the_train_split_only(toy):
    counts = slices.training_counts(toy["train"], 6)
    expected = np.zeros(6, int)
    for s in toy["seqs"].values():
        for item in s[:-2]:  # training interactions: all but the validation and test targets
            expected[item] += 1
    assert counts.tolist() == expected.tolist()


def test_popularity_thresholds_ignore_the_test_split(toy, tmp_path):
    """Item 5 is the test target of two users and never a training item: it is cold, however often it is tested;
    making every test target item 5 moves no training count and no tier."""
    counts = slices.training_counts(toy["train"], 6)
    tiers = slices.popularity_tiers(counts)
    assert tiers[5] == "cold" and tiers[0] == "head"
    before = slices.shared_slices(toy["train"], toy["test"], toy["interactions"], 6)["popularity"]
    test = pq.read_table(toy["test"]).to_pydict()
    leaked = write(tmp_path / "test_leak.parquet", user_id=test["user_id"], history=test["history"],
                   target=[5] * len(test["target"]))
    after = slices.shared_slices(toy["train"], leaked, toy["interactions"], 6)["popularity"]
    assert set(after.values()) == {"cold"}  # every target is item 5: cold, from training counts alone
    assert before[1] == after[1] == "cold"  # user 1's target was 5 already: same tier


def test_head_torso_tail_hold_a_third_of_the_training_interactions_each():
    counts = np.array([30, 20, 10, 10, 10, 5, 5, 5, 3, 2, 0])  # 100 interactions
    tiers = slices.popularity_tiers(counts, cold_max=2)
    share = {t: counts[tiers == t].sum() / counts.sum() for t in ("head", "torso", "tail")}
    # an item joins the third in which its interactions start (shares before it: 0, .3, .5, .6, .7, ...)
    assert tiers.tolist() == ["head", "head", "torso", "torso", "tail", "tail", "tail", "tail", "tail", "cold", "cold"]
    assert share["head"] == 0.5 and share["torso"] == 0.2  # items are whole: a third is reached, then passed


def test_slices_partition_the_users_and_a_slice_metric_equals_the_hand_computation(toy, tmp_path):
    # ranks (1-based, 0 = not in the list): user 0 hit at 1, user 1 at 3, user 2 missed, user 3 at 12 (beyond @10)
    base = write(tmp_path / "base.parquet", user_id=[0, 1, 2, 3], target=[3, 5, 0, 5], rank=[1, 3, 0, 12])
    other = write(tmp_path / "other.parquet", user_id=[3, 2, 1, 0], target=[5, 0, 5, 3], rank=[2, 1, 0, 1])
    shared = slices.shared_slices(toy["train"], toy["test"], toy["interactions"], 6)
    result = slices.compare_slices({"base": base, "other": other}, "base", shared)
    for family, block in result["families"].items():
        for method, row in block["methods"].items():
            assert sum(c["users"] for c in row.values()) == 4, (family, method)  # a partition of the users
    pop = result["families"]["popularity"]["methods"]
    # item 5 (users 1 and 3) is cold; item 3 (user 0, one training interaction) too; item 0 (user 2) is head
    assert shared["popularity"] == {0: "cold", 1: "cold", 2: "head", 3: "cold"}
    cold_other = (1.0 + 0.0 + 1 / math.log2(3)) / 3  # users 0, 1, 3: ranks 1, miss, 2
    cold_base = (1.0 + 1 / math.log2(4) + 0.0) / 3  # ranks 1, 3, 12 (beyond 10)
    assert pop["other"]["cold"]["ndcg@10"] == pytest.approx(cold_other)
    assert pop["other"]["cold"]["baseline_ndcg@10"] == pytest.approx(cold_base)
    assert pop["other"]["cold"]["relative_ndcg@10"] == pytest.approx(cold_other / cold_base - 1)
    assert pop["other"]["head"]["ndcg@10"] == 1.0 and pop["base"]["head"]["ndcg@10"] == 0.0
    assert pop["other"]["cold"]["recall@10"] == pytest.approx(2 / 3)
    from scipy import stats
    p = stats.ttest_rel([1.0, 0.0, 1 / math.log2(3)], [1.0, 1 / math.log2(4), 0.0]).pvalue
    assert pop["other"]["cold"]["paired_t_p"] == pytest.approx(p)
    assert "paired_t_p" not in pop["base"]["cold"]  # the baseline is not tested against itself
    # history lengths 4, 4, 4, 6: quartiles 4, 4, 4.5 -> buckets "4", "5" (empty) and "6+"
    assert shared["history"] == {0: "4", 1: "4", 2: "4", 3: "6+"}


def test_quantile_buckets_label_every_value_once():
    values = np.array([4] * 40 + [5] * 20 + [6] * 10 + [7] * 10 + [9] * 10 + [30] * 10)
    labels = slices.quantile_buckets(values, (0.25, 0.5, 0.75))
    assert labels.tolist().count("4") == 40 and labels.tolist().count("5") == 20
    assert set(labels) == {"4", "5", "6-7", "8+"}


def test_prefix_slices_follow_the_methods_own_ids(toy, tmp_path):
    # items 0..5: first codes 0 0 0 1 1 2 -> group sizes 3 3 3 2 2 1
    ids = write(tmp_path / "ids.parquet", item_id=list(range(6)), c1=[0, 0, 0, 1, 1, 2], c2=[0, 1, 2, 0, 1, 0])
    labels, spans = slices.prefix_slices(toy["test"], ids)
    # test targets: 3 (group of 2), 5 (1), 0 (3), 5 (1)
    assert labels == {0: "middle", 1: "small", 2: "large", 3: "small"}
    assert spans == {"small": "1 item", "middle": "2 items", "large": "3+ items"}


def test_a_user_without_a_slice_is_an_error(toy, tmp_path):
    base = write(tmp_path / "base.parquet", user_id=[0, 1, 2, 3], target=[3, 5, 0, 5], rank=[1, 3, 0, 12])
    with pytest.raises(ValueError, match="no slice"):
        slices.compare_slices({"base": base}, "base", {"history": {0: "4", 1: "4", 2: "4"}})


def test_slice_marks_follow_holm_over_all_the_cells(tmp_path):
    """Two slices, each with a gain whose raw paired p-values are about 0.028: one cell alone would be marked *, but
    adjusted by Holm's step-down method for the two cells (0.056) neither is."""
    n = 2000
    base = np.zeros(n, dtype=np.int64)
    base[:100] = base[1000:1100] = 1  # 100 hits at rank 1 in each slice of 1,000 users
    other = base.copy()
    for start in (0, 1000):  # in each slice: 39 hits lost, 61 gained (z = 22 / sqrt(100) = 2.2)
        other[start:start + 39], other[start + 200:start + 261] = 0, 1
    users = np.arange(n)
    ranks = {name: write(tmp_path / f"{name}.parquet", user_id=users, target=np.zeros(n, dtype=np.int64), rank=r)
             for name, r in (("base", base), ("other", other))}
    result = slices.compare_slices(ranks, "base", {"history": {int(u): "4" if u < 1000 else "5+" for u in users}})
    cells = result["families"]["history"]["methods"]["other"]
    assert result["comparisons"] == 2
    for cell in cells.values():
        assert 0.025 < cell["paired_t_p"] < 0.05 and 0.025 < cell["wilcoxon_p"] < 0.05
        assert cell["paired_t_p_holm"] == pytest.approx(2 * min(c["paired_t_p"] for c in cells.values()))
    table = slices.markdown(result)
    assert "| other | 0.1220 (+22%) | 0.1220 (+22%) |" in table
    assert "for the 2 cells of these tables together" in table
