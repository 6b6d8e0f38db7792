"""TIGER and the shared trainer on a tiny synthetic catalogue."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pipeline.config import TrainConfig
from pipeline.data.splits import Split
from pipeline.evaluation.metrics import ranking_metrics
from pipeline.evaluation.ranking import rank_split
from pipeline.models.tiger.model import BOS, EOS, FIRST_CODE, PAD, IncrementalT5Decoder, Tiger, TigerConfig
from pipeline.runtime.precision import autocast
from pipeline.training.trainer import Trainer

N_ITEMS, DEPTH, K = 40, 4, 8


def catalogue(seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.unique(torch.randint(0, K, (200, DEPTH), generator=g), dim=0)[:N_ITEMS]
    return codes[torch.randperm(N_ITEMS, generator=g)]


def pattern_split(n_users=60, length=6, start=0, walk=None, first=None):
    """Each user walks item -> (7 * item + 3) % N: the next item is a function of the last one.
    ``walk(user, item)`` and ``first(user)`` replace the rule and the first item."""
    walk = walk or (lambda user, item: (7 * item + 3) % N_ITEMS)
    first = first or (lambda user: (user * 11 + start) % N_ITEMS)
    users, offsets, values, targets = [], [0], [], []
    for u in range(n_users):
        seq = [first(u)]
        for _ in range(length):
            seq.append(walk(u, seq[-1]))
        for t in range(1, len(seq)):
            users.append(u)
            values.extend(seq[max(0, t - 20):t])
            offsets.append(len(values))
            targets.append(seq[t])
    return Split(np.array(users), np.array(offsets), np.array(values), np.array(targets))


def tiny_tiger(seed=0, decoder_layers=1):
    torch.manual_seed(seed)
    cfg = TigerConfig(n_items=N_ITEMS, depth=DEPTH, codebook_size=K, d_model=32, num_layers=1,
                      num_decoder_layers=decoder_layers,
                      num_heads=2, d_kv=16, d_ff=64, dropout=0.1)
    return Tiger(cfg, catalogue())


def test_encoder_input_is_history_ids_then_eos_and_targets_are_the_ids():
    model = tiny_tiger()
    split = Split(np.array([0, 1]), np.array([0, 2, 3]), np.array([5, 9, 9]), np.array([1, 2]))
    batch = model.make_batch(split, np.array([0, 1]), "cpu")
    tok = model.item_tokens
    assert batch["input_ids"][0].tolist()[:9] == tok[5].tolist() + tok[9].tolist() + [EOS]
    assert batch["input_ids"][1].tolist()[:5] == tok[9].tolist() + [EOS]
    assert set(batch["input_ids"][1].tolist()[5:]) == {PAD}
    assert batch["attention_mask"].sum(1).tolist() == [9, 5]
    assert batch["labels"].tolist() == [tok[1].tolist(), tok[2].tolist()]
    codes = catalogue()
    assert tok[1].tolist() == [FIRST_CODE + level * K + int(c) for level, c in enumerate(codes[1])]
    assert BOS not in batch["input_ids"]


@torch.no_grad()
def every_item_log_probability(model, batch, row):
    """Teacher-forced log P(item | history of ``row``) for every item: one full forward per item."""
    rep = {k: v[row : row + 1].expand(N_ITEMS, *v.shape[1:]) for k, v in batch.items()}
    rep["labels"] = model.item_tokens
    return torch.log_softmax(model.logits(rep), -1).gather(2, rep["labels"][..., None]).squeeze(-1).sum(1)


@pytest.mark.parametrize("decoder_layers", [1, 2])  # 2: the per-layer slices of the fused cross-attention K/V
def test_beam_scores_are_the_full_sequence_log_probabilities(decoder_layers):
    model = tiny_tiger(decoder_layers=decoder_layers).eval()
    split = pattern_split(4)
    batch = model.make_batch(split, np.arange(3), "cpu")
    items, scores = model.beam_search(batch, beam_size=N_ITEMS)
    for row in range(3):
        logp = every_item_log_probability(model, batch, row)
        assert torch.allclose(logp[items[row]], scores[row], atol=1e-4)
        assert items[row, :10].tolist() == logp.topk(10).indices.tolist()  # exhaustive beam = exact ranking


def test_search_from_precomputed_encoder_states_is_the_same_search():
    model = tiny_tiger(decoder_layers=2).eval()
    batch = model.make_batch(pattern_split(4), np.arange(5), "cpu")
    items, scores = model.beam_search(batch, beam_size=10)
    context, encoded = model.encode(batch)
    items_e, scores_e = model.beam_search(context, beam_size=10, encoded=encoded)
    assert torch.equal(items, items_e) and torch.equal(scores, scores_e)


def test_beam_scores_come_from_float32_logits_under_bf16_autocast(monkeypatch):
    """bf16 logits (steps of 1/16 at magnitude 10) would tie and reorder beams: the head stays float32."""
    model = tiny_tiger(decoder_layers=2).eval()
    batch = model.make_batch(pattern_split(4), np.arange(5), "cpu")
    seen = []
    step = IncrementalT5Decoder.step
    monkeypatch.setenv("GENREC_FORCE_BF16", "1")  # bf16 on any CI CPU, emulated or not
    with torch.inference_mode(), autocast(torch.device("cpu"), "bf16"):
        IncrementalT5Decoder.step = lambda self, e: seen.append(step(self, e)) or seen[-1]
        try:
            model.beam_search(batch, beam_size=10)
        finally:
            IncrementalT5Decoder.step = step
    assert len(seen) == DEPTH
    for logits in seen:
        assert logits.dtype == torch.float32
        assert bool((logits != logits.bfloat16().float()).any())  # not merely bf16 values in a float32 tensor


def test_tiny_tiger_overfits_a_tiny_dataset(tmp_path):
    train = pattern_split()
    model = tiny_tiger()
    cfg = TrainConfig(epochs=60, batch_size=32, lr=1e-2, weight_decay=0.0, warmup_steps=20, eval_every=60,
                      patience=100, beam_size=10)
    Trainer(model, train, train, cfg, tmp_path, seed=0, device="cpu", log=lambda *_: None).fit()
    ranked = rank_split(model, train, 10, 64, torch.device("cpu"))
    assert ranking_metrics(ranked, train.targets)["recall@5"] >= 0.9


class Interrupt(Exception):
    pass


def test_training_resumes_from_the_last_checkpoint_exactly(tmp_path):
    train, valid = pattern_split(30, start=0), pattern_split(10, start=5)
    cfg = TrainConfig(epochs=4, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=1, patience=10, beam_size=10)

    def run(out, stop_at=None):
        model = tiny_tiger(seed=1)

        def on_epoch(epoch, row):
            if epoch == stop_at:
                raise Interrupt

        trainer = Trainer(model, train, valid, cfg, out, seed=3, device="cpu", fingerprint="f", log=lambda *_: None,
                          on_epoch=on_epoch)
        trainer.fit()
        return trainer

    straight = run(tmp_path / "a")
    with pytest.raises(Interrupt):
        run(tmp_path / "b", stop_at=2)
    resumed = run(tmp_path / "b")
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in straight.history]
    a, b = load_file(str(tmp_path / "a/last/model.safetensors")), load_file(str(tmp_path / "b/last/model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_time_budget_stops_after_the_crossing_epoch_and_validates_it(tmp_path):
    train, valid = pattern_split(20, start=0), pattern_split(5, start=5)
    # eval_every beyond the budget: the epoch that crosses the budget must still be validated and kept
    cfg = TrainConfig(epochs=50, batch_size=16, warmup_steps=5, eval_every=100, patience=100, beam_size=10,
                      time_budget_minutes=1e-9)
    trainer = Trainer(tiny_tiger(), train, valid, cfg, tmp_path, seed=0, device="cpu", log=lambda *_: None)
    summary = trainer.fit()
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 1
    assert "valid_ndcg@10" in trainer.history[-1]
    assert (tmp_path / "best.safetensors").exists()
