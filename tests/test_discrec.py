"""DiscRec's embedding module on TIGER: the switch that reduces it to TIGER, item-local attention, the cached
search against teacher forcing, the Table III switches, and a short training."""
import numpy as np
import pytest
import torch

from pipeline.config import TrainConfig
from pipeline.evaluation.metrics import ranking_metrics
from pipeline.evaluation.ranking import rank_split
from pipeline.models.discrec.model import Discrec, DiscrecConfig
from pipeline.training.trainer import Trainer
from tests.test_tiger import DEPTH, N_ITEMS, K, catalogue, every_item_log_probability, pattern_split, tiny_tiger


def tiny_discrec(seed=0, decoder_layers=1, **switches):
    torch.manual_seed(seed)
    cfg = DiscrecConfig(n_items=N_ITEMS, depth=DEPTH, codebook_size=K, d_model=32, num_layers=1,
                        num_decoder_layers=decoder_layers, num_heads=2, d_kv=16, d_ff=64, dropout=0.1,
                        branch_ff=64, **switches)
    return Discrec(cfg, catalogue())


def varied_batch(model):
    """Histories of 1 to 6 items in one batch: padding, EOS after each, a one-item history."""
    split = pattern_split(5)
    return model.make_batch(split, np.array([0, 1, 3, 5, 6, 9]), "cpu")


@pytest.mark.parametrize("decoder_layers", [1, 2])
def test_semantic_fusion_computes_tigers_logits(decoder_layers):
    tiger = tiny_tiger(seed=3, decoder_layers=decoder_layers).eval()
    model = tiny_discrec(seed=3, decoder_layers=decoder_layers, fusion="semantic").eval()
    batch = varied_batch(model)
    assert torch.equal(model.logits(batch), tiger.logits(batch))
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in tiger.named_parameters()]
    items_t, scores_t = tiger.beam_search(batch, 8)
    items_d, scores_d = model.beam_search(batch, 8)
    assert torch.equal(items_t, items_d) and torch.equal(scores_t, scores_d)


@pytest.mark.parametrize("switches", [{}, {"fusion": "sum"}, {"item_positions": False},
                                      {"localized_transformer": False}])
def test_cached_beam_scores_equal_teacher_forced_log_probabilities(switches):
    model = tiny_discrec(seed=1, decoder_layers=2, **switches).eval()
    with torch.no_grad():  # a gate away from the even mix, so that it matters
        if hasattr(model, "gate"):
            model.gate.normal_(0, 0.3)
    batch = varied_batch(model)
    items, scores = model.beam_search(batch, beam_size=N_ITEMS)
    for row in range(len(items)):
        logp = every_item_log_probability(model, batch, row)
        assert torch.allclose(logp[items[row]], scores[row], atol=1e-4)
        assert items[row, :10].tolist() == logp.topk(10).indices.tolist()


def test_a_token_changes_only_the_branch_output_of_its_own_item():
    """The collaborative branch mixes tokens within an item only: changing the tokens of one history item
    leaves every other item's branch output (EOS included, when it is not the last item) unchanged."""
    model = tiny_discrec(seed=2, fusion="sum", item_positions=True).eval()
    batch = varied_batch(model)
    row = 3  # sample 5: a history of six items
    n_items = int((batch["attention_mask"][row].sum() - 1) // DEPTH)
    assert n_items >= 3
    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][row, DEPTH : 2 * DEPTH] = batch["input_ids"][row, 2 * DEPTH : 3 * DEPTH]  # item 1
    with torch.no_grad():
        a, b = model.embed_encoder(batch), model.embed_encoder(changed)
    moved = (a[row] - b[row]).abs().sum(-1) > 1e-6
    expected = torch.zeros_like(moved)
    expected[DEPTH : 2 * DEPTH] = True
    assert torch.equal(moved, expected)
    assert torch.equal(a[:row], b[:row]) and torch.equal(a[row + 1 :], b[row + 1 :])


def test_decoder_branch_is_causal_within_the_item():
    model = tiny_discrec(seed=2).eval()
    batch = varied_batch(model)
    tokens = torch.cat([torch.full_like(batch["labels"][:, :1], 2), batch["labels"][:, :-1]], 1)
    later = tokens.clone()
    later[:, -1] = tokens[:, -1].flip(0)
    with torch.no_grad():
        a, b = model.embed_decoder(tokens, batch, 0), model.embed_decoder(later, batch, 0)
    assert torch.equal(a[:, :-1], b[:, :-1]) and not torch.equal(a[:, -1], b[:, -1])


def test_bad_switches_are_named():
    with pytest.raises(ValueError, match="fusion"):
        tiny_discrec(fusion="concat")
    with pytest.raises(ValueError, match="branch_heads"):
        tiny_discrec(branch_heads=3)


def test_discrec_learns_a_tiny_dataset_and_logs_its_gate(tmp_path):
    train = pattern_split()
    model = tiny_discrec(seed=0)
    cfg = TrainConfig(epochs=60, batch_size=32, lr=1e-2, weight_decay=0.0, warmup_steps=20, eval_every=60,
                      patience=100, beam_size=10)
    trainer = Trainer(model, train, train, cfg, tmp_path, seed=0, device="cpu", log=lambda *_: None)
    trainer.fit()
    ranked = rank_split(model, train, 10, 64, torch.device("cpu"))
    assert ranking_metrics(ranked, train.targets)["recall@5"] >= 0.9
    gate = [row["gate_collaborative_encoder"] for row in trainer.history]
    assert len(gate) == 60 and all(0 < g < 1 for g in gate) and gate[0] != gate[-1]
    assert "gate_collaborative_decoder" in trainer.history[-1]


@pytest.mark.parametrize("switches", [{}, {"fusion": "sum"}, {"item_positions": False},
                                      {"localized_transformer": False}, {"fusion": "semantic"}])
def test_every_parameter_of_each_table_iii_row_is_trained(switches):
    """A parameter outside the loss's graph would stop DistributedDataParallel (and is dead weight)."""
    model = tiny_discrec(seed=0, **switches).train()
    model.loss(varied_batch(model)).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == [], unused
