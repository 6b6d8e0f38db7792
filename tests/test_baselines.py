"""SASRec and the most-popular baseline on tiny synthetic splits (CPU, a few seconds)."""
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model

from pipeline.config import ParamsError
from pipeline.data.sequences import leave_one_out
from pipeline.data.splits import Split, load_split
from pipeline.evaluation.metrics import ranking_metrics
from pipeline.models.base import ModelInputs
from pipeline.models.popularity import MostPopular, training_interaction_counts
from pipeline.models.registry import build
from pipeline.models.sasrec import SASRec, SASRecConfig, position_ids

N_ITEMS = 20


@pytest.fixture(autouse=True)
def one_thread():
    # Models this small gain nothing from threads, and on a busy 2-core machine intra-op threads
    # contend (a training step went from ~15 ms to ~1 s): run single-threaded, restore afterwards.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def next_item(item: int) -> int:
    return (3 * item + 1) % N_ITEMS  # a permutation of the items: the next item is a function of the last


def split_of(sequences: list[list[int]], max_history: int = 20) -> Split:
    """Every prefix -> next item of each sequence, histories keeping the most recent ``max_history``."""
    users, offsets, values, targets = [], [0], [], []
    for u, seq in enumerate(sequences):
        for t in range(1, len(seq)):
            users.append(u)
            values.extend(seq[max(0, t - max_history):t])
            offsets.append(len(values))
            targets.append(seq[t])
    return Split(np.array(users, dtype=np.int64), np.array(offsets, dtype=np.int64),
                 np.array(values, dtype=np.int64), np.array(targets, dtype=np.int64))


def pattern_split(n_users: int = 30, length: int = 8) -> Split:
    sequences = []
    for u in range(n_users):
        seq = [u % N_ITEMS]
        for _ in range(length - 1):
            seq.append(next_item(seq[-1]))
        sequences.append(seq)
    return split_of(sequences)


def random_split(n_users: int = 12, max_len: int = 6, seed: int = 0) -> Split:
    """Histories of lengths 1 .. beyond max_len (some truncated), random items."""
    rng = np.random.default_rng(seed)
    sequences = [rng.integers(0, N_ITEMS, size=int(rng.integers(2, max_len + 4))).tolist() for _ in range(n_users)]
    return split_of(sequences)


def tiny_sasrec(seed: int = 0, max_len: int = 6, dropout: float = 0.1) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(SASRecConfig(n_items=N_ITEMS, max_len=max_len, hidden=32, n_blocks=2, n_heads=2, dropout=dropout))


def all_ranks(model: SASRec, split: Split, k: int) -> np.ndarray:
    model.eval()
    return model.rank(model.make_batch(split, np.arange(len(split)), "cpu"), k).numpy()


# ----- SASRec -------------------------------------------------------------------------------------------

def test_sasrec_overfits_a_deterministic_pattern():
    split = pattern_split()
    model = tiny_sasrec(max_len=8)
    before = ranking_metrics(all_ranks(model, split, 10), split.targets)["recall@5"]
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = np.random.default_rng(0)
    for step in range(300):
        model.train()
        idx = gen.choice(len(split), size=64, replace=False)
        loss = model.loss(model.make_batch(split, idx, "cpu"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = ranking_metrics(all_ranks(model, split, 10), split.targets)
    assert before < 0.5  # an untrained model does not pass by chance (5 of 20 items: ~0.25)
    assert after["recall@5"] >= 0.9, after
    assert float(loss.detach()) < 0.5


def test_make_batch_right_pads_with_n_items_and_keeps_the_most_recent_items():
    split = split_of([[1, 2, 3, 4, 5, 6, 7, 8, 9], [10, 11]])
    model = tiny_sasrec(max_len=4)
    batch = model.make_batch(split, np.array([7, 0, 8]), "cpu")  # history lengths 8 (-> 4), 1, 1
    assert batch["history"].tolist() == [[5, 6, 7, 8], [1, N_ITEMS, N_ITEMS, N_ITEMS], [10, N_ITEMS, N_ITEMS, N_ITEMS]]
    assert batch["lengths"].tolist() == [4, 1, 1]
    assert batch["target"].tolist() == [9, 2, 11]
    short = model.make_batch(split, np.array([0, 1]), "cpu")  # trimmed to the longest history of the batch
    assert short["history"].tolist() == [[1, N_ITEMS], [1, 2]]
    assert all(v.dtype == torch.int64 for v in batch.values())


def test_empty_history_is_rejected_with_a_clear_message():
    split = Split(np.array([0, 1]), np.array([0, 2, 2]), np.array([3, 4]), np.array([5, 6]))
    model = tiny_sasrec()
    with pytest.raises(ValueError, match="at least one history item"):
        model.make_batch(split, np.array([0, 1]), "cpu")
    batch = model.make_batch(split, np.array([0]), "cpu")
    batch["lengths"][0] = 0
    with pytest.raises(ValueError, match="at least one history item"):
        model.loss(batch)


def test_padding_content_does_not_change_outputs():
    split = random_split()
    model = tiny_sasrec().eval()
    batch = model.make_batch(split, np.arange(len(split)), "cpu")
    pad = batch["history"] == N_ITEMS
    assert pad.any() and (~pad).any()
    noisy = dict(batch, history=batch["history"].masked_scatter(
        pad, torch.randint(0, N_ITEMS, (int(pad.sum()),), generator=torch.Generator().manual_seed(1))))
    assert not torch.equal(noisy["history"], batch["history"])
    with torch.no_grad():
        torch.testing.assert_close(model.scores(noisy), model.scores(batch), rtol=0, atol=1e-5)


def test_hidden_state_at_a_slot_ignores_later_items():
    model = tiny_sasrec(max_len=6).eval()
    history = torch.tensor([[1, 2, 3, 4, 5, 6]])
    lengths = torch.tensor([6])
    changed = history.clone()
    j = 2
    changed[0, j + 1:] = torch.tensor([11, 12, 13])
    with torch.no_grad():
        a, b = model.encode(history, lengths), model.encode(changed, lengths)
    torch.testing.assert_close(a[:, : j + 1], b[:, : j + 1], rtol=0, atol=1e-5)
    assert (a[:, j + 1:] - b[:, j + 1:]).abs().max() > 1e-3  # the later slots do see their own items


def test_positions_count_back_from_the_most_recent_item():
    # the paper's left-padded window puts the most recent item in the last slot, so it always has the
    # same position embedding; with right padding that is position 0 at slot length - 1
    assert position_ids(torch.tensor([3, 1, 4]), 4).tolist() == [[2, 1, 0, 0], [0, 0, 0, 0], [3, 2, 1, 0]]
    # With the attention outputs zeroed, each slot sees only its own item and position: the most recent
    # item must then give the same representation whatever came before it (absolute slots would not).
    model = tiny_sasrec(max_len=6).eval()
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.self_attn.out_proj.weight.zero_()
            layer.self_attn.out_proj.bias.zero_()
        h = model.represent({"history": torch.tensor([[3, N_ITEMS, N_ITEMS], [7, 3, N_ITEMS], [1, 2, 3]]),
                             "lengths": torch.tensor([1, 2, 3])})
    torch.testing.assert_close(h[1], h[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(h[2], h[0], rtol=0, atol=1e-6)


def test_batch_results_equal_one_sample_at_a_time():
    split = random_split()
    model = tiny_sasrec().eval()
    idx = np.arange(len(split))
    with torch.no_grad():
        together = model.scores(model.make_batch(split, idx, "cpu"))
        alone = torch.cat([model.scores(model.make_batch(split, np.array([i]), "cpu")) for i in idx])
    assert len(set(split.lengths(idx).tolist())) > 3  # mixed lengths: padding actually differs
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)


def test_rank_returns_distinct_valid_items_sorted_by_score():
    split = random_split()
    model = tiny_sasrec().eval()
    batch = model.make_batch(split, np.arange(len(split)), "cpu")
    k = 7
    ranked = model.rank(batch, k)
    assert ranked.shape == (len(split), k) and ranked.dtype == torch.int64
    assert ((ranked >= 0) & (ranked < N_ITEMS)).all()
    assert all(len(set(row)) == k for row in ranked.tolist())
    with torch.no_grad():
        scores = model.scores(batch)
    picked = scores.gather(1, ranked)
    assert (picked[:, :-1] >= picked[:, 1:]).all()
    # nothing left out scores higher than the k-th item
    rest = scores.scatter(1, ranked, float("-inf"))
    assert (rest.max(dim=1).values <= picked[:, -1]).all()
    longer = model.rank(batch, N_ITEMS + 3)  # longer than the catalogue: every item once, then -1
    assert (longer[:, N_ITEMS:] == -1).all()
    assert all(sorted(row[:N_ITEMS]) == list(range(N_ITEMS)) for row in longer.tolist())


def test_loss_is_full_softmax_cross_entropy_and_never_trains_the_padding_row():
    split = random_split()
    model = tiny_sasrec(dropout=0.0)
    batch = model.make_batch(split, np.arange(len(split)), "cpu")
    loss = model.loss(batch)
    h = model.represent(batch)
    expected = F.cross_entropy(h @ model.item_emb.weight[:N_ITEMS].T, batch["target"])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.item_emb.weight.grad[N_ITEMS].abs().max() == 0
    assert model.item_emb.weight.grad[:N_ITEMS].abs().max() > 0


def test_item_embeddings_are_the_table_without_the_padding_row():
    model = tiny_sasrec()
    emb = model.item_embeddings()
    assert emb.shape == (N_ITEMS, 32)
    torch.testing.assert_close(emb, model.item_emb.weight[:N_ITEMS].detach())
    assert model.item_emb.weight[N_ITEMS].abs().max() == 0
    assert not emb.requires_grad


def sasrec_block(backbone: dict, max_history: int = 7) -> SASRec:
    return build("sasrec", backbone, ModelInputs(n_items=11), max_history, "params.yaml: methods.sasrec")


def test_the_registry_builds_the_config_and_rejects_unknown_keys_naming_the_block():
    model = sasrec_block({"hidden": 48, "n_blocks": 1, "n_heads": 3, "dropout": 0.5})
    assert model.config == SASRecConfig(n_items=11, max_len=7, hidden=48, n_blocks=1, n_heads=3, dropout=0.5)
    assert len(model.encoder.layers) == 1 and model.pos_emb.num_embeddings == 7
    assert model.item_emb.num_embeddings == 12
    assert SASRecConfig.from_dict(model.config.to_dict()) == model.config
    with pytest.raises(ParamsError, match=r"methods.sasrec.backbone: .*hiden"):
        sasrec_block({"hiden": 64})
    with pytest.raises(ParamsError, match="n_heads"):
        sasrec_block({"hidden": 64, "n_heads": 3})
    with pytest.raises(ParamsError, match=r"methods.sasrec.backbone: \['max_len'\] come from the data"):
        sasrec_block({"max_len": 50})  # filter.max_history decides it, for every method alike
    with pytest.raises(ValueError, match="bogus"):
        SASRecConfig.from_dict({"n_items": 3, "bogus": 1})


def test_sasrec_weights_round_trip_through_safetensors(tmp_path):
    split = random_split()
    model = tiny_sasrec(seed=0).eval()
    other = tiny_sasrec(seed=1).eval()
    save_model(model, str(tmp_path / "w.safetensors"))
    load_model(other, str(tmp_path / "w.safetensors"), strict=True)
    batch = model.make_batch(split, np.arange(len(split)), "cpu")
    assert torch.equal(model.rank(batch, 5), other.rank(batch, 5))


# ----- most popular -------------------------------------------------------------------------------------

# Leave-one-out on these sequences (docs/method_reference.md §1): training interactions are all but the last two items.
SEQUENCES = [
    [5, 3, 1, 6, 0],  # train 5 3 1 | valid 6 | test 0
    [3, 1, 5, 2, 6, 0],  # train 3 1 5 2 | valid 6 | test 0
    [4, 3, 2, 0, 6],  # train 4 3 2 | valid 0 | test 6
    [3, 5, 6, 0],  # train 3 5 | valid 6 | test 0
]
# item:           0  1  2  3  4  5  6   (0 and 6 are the most frequent items overall, all as valid/test targets)
EXPECTED_COUNTS = [0, 2, 2, 4, 1, 3, 0]
EXPECTED_ORDER = [3, 5, 1, 2, 4, 0, 6]  # ties (1, 2) and (0, 6) go to the lower id


def loo_splits(tmp_path, max_history: int) -> dict[str, Split]:
    """The filter stage's own leave-one-out, written and read back as the pipeline does."""
    users = [u for u, seq in enumerate(SEQUENCES) for _ in seq]
    items = [i for seq in SEQUENCES for i in seq]
    frame = pl.DataFrame({"user_id": users, "item_id": items})
    out = {}
    for name, table in leave_one_out(frame, max_history=max_history).items():
        pq.write_table(table, tmp_path / f"{name}.parquet")
        out[name] = load_split(tmp_path / f"{name}.parquet")
    return out


@pytest.mark.parametrize("max_history", [1, 2, 20])
def test_popularity_counts_exactly_the_training_interactions(tmp_path, max_history):
    splits = loo_splits(tmp_path, max_history)
    model = MostPopular(len(EXPECTED_COUNTS)).fit(splits["train"])
    assert model.counts.tolist() == EXPECTED_COUNTS
    # no validation or test target is counted: 0 and 6 are only ever such targets
    assert set(splits["valid"].targets) | set(splits["test"].targets) == {0, 6}
    assert model.counts[[0, 6]].tolist() == [0, 0]
    assert sum(EXPECTED_COUNTS) == sum(len(s) - 2 for s in SEQUENCES)
    batch = model.make_batch(splits["test"], np.arange(len(splits["test"])), "cpu")
    ranked = model.rank(batch, 5)
    assert ranked.tolist() == [EXPECTED_ORDER[:5]] * len(splits["test"])
    assert model.rank(batch, 9)[0].tolist() == EXPECTED_ORDER + [-1, -1]


def test_popularity_counts_do_not_depend_on_sample_order(tmp_path):
    train = loo_splits(tmp_path, max_history=3)["train"]
    perm = np.random.default_rng(0).permutation(len(train))
    lengths = train.lengths(perm)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.concatenate([train.values[train.offsets[i]:train.offsets[i + 1]] for i in perm])
    shuffled = Split(train.users[perm], offsets, values, train.targets[perm])
    assert training_interaction_counts(shuffled, 7).tolist() == EXPECTED_COUNTS


def test_popularity_ties_go_to_the_lower_item_id():
    model = MostPopular(6)
    model.counts.copy_(torch.tensor([1, 5, 1, 5, 0, 1]))
    assert model.top_items(6).tolist() == [1, 3, 0, 2, 5, 4]
    # many ties in a large catalogue (where an unstable sort would reorder them)
    counts = np.random.default_rng(0).integers(0, 3, size=50_000)
    model = MostPopular(len(counts))
    model.counts.copy_(torch.as_tensor(counts))
    expected = np.lexsort((np.arange(len(counts)), -counts))[:100]
    assert model.top_items(100).tolist() == expected.tolist()


def test_popularity_has_nothing_to_train_and_round_trips_through_safetensors(tmp_path):
    splits = loo_splits(tmp_path, max_history=20)
    model = MostPopular(7).fit(splits["train"])
    assert sum(p.numel() for p in model.parameters()) == 0
    with pytest.raises(NotImplementedError, match="fit"):
        model.loss(model.make_batch(splits["train"], np.arange(2), "cpu"))
    save_model(model, str(tmp_path / "pop.safetensors"))
    fresh = MostPopular(7)
    load_model(fresh, str(tmp_path / "pop.safetensors"), strict=True)
    assert fresh.counts.tolist() == EXPECTED_COUNTS


def test_popularity_rejects_out_of_range_items():
    split = split_of([[0, 1, 9]])
    with pytest.raises(ValueError, match="lie in"):
        MostPopular(5).fit(split)
