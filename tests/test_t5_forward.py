"""The lean T5 forward pass (pipeline.models.tiger.t5) computes Hugging Face's T5ForConditionalGeneration on the
library's own weights: logits, loss and gradients; TIGER's teacher-forced pass and its search use it, and a
model's weights keep the library's names (model folders load either way)."""
import numpy as np
import pytest
import torch
from transformers import T5Config, T5ForConditionalGeneration

from pipeline.config import TrainConfig
from pipeline.models.tiger import t5 as lean
from pipeline.models.tiger.model import decoder_input_ids, token_loss
from pipeline.training.trainer import Trainer
from tests.test_tiger import N_ITEMS, pattern_split, tiny_tiger


def library_t5(feed_forward_proj="relu", dropout=0.0, seed=0):
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(
        vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_decoder_layers=3, num_heads=2,
        dropout_rate=dropout, feed_forward_proj=feed_forward_proj, decoder_start_token_id=0, pad_token_id=0))


def inputs(seed=0):
    """Four histories of 9 tokens, two of them padded (the padding masks), and targets of 5 tokens."""
    g = torch.Generator().manual_seed(seed)
    ids, labels = torch.randint(3, 50, (4, 9), generator=g), torch.randint(3, 50, (4, 5), generator=g)
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    return ids, mask, labels


def ours(t5, ids, mask, labels):
    encoded = lean.encode(t5, t5.shared(ids), mask)
    return lean.lm_logits(t5, lean.decode(t5, t5.shared(t5._shift_right(labels)), encoded, mask))


@pytest.mark.parametrize("feed_forward_proj", ["relu", "gated-gelu"])
def test_logits_loss_and_gradients_are_the_librarys(feed_forward_proj):
    t5 = library_t5(feed_forward_proj)
    ids, mask, labels = inputs()
    reference = t5(input_ids=ids, attention_mask=mask, labels=labels)
    reference.loss.backward()
    expected = {name: p.grad.clone() for name, p in t5.named_parameters() if p.grad is not None}
    t5.zero_grad(set_to_none=True)
    logits = ours(t5, ids, mask, labels)
    loss = token_loss(logits, labels)
    loss.backward()
    torch.testing.assert_close(logits, reference.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(loss, reference.loss, rtol=0, atol=1e-6)
    got = {name: p.grad for name, p in t5.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()  # every weight the library trains, the position biases included
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_under_bf16_autocast_the_logits_are_the_librarys_within_bf16_rounding():
    t5 = library_t5()
    ids, mask, labels = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = t5(input_ids=ids, attention_mask=mask, labels=labels).logits
        logits = ours(t5, ids, mask, labels)
    assert logits.dtype == reference.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: one or two units of the last place at these magnitudes
    torch.testing.assert_close(logits.float(), reference.float(), rtol=0, atol=0.05)


def test_padding_does_not_change_a_users_logits():
    t5 = library_t5().eval()
    ids, mask, labels = inputs()
    short = ours(t5, ids[2:3, :3], mask[2:3, :3], labels[2:3])
    torch.testing.assert_close(ours(t5, ids, mask, labels)[2:3], short, rtol=0, atol=1e-5)


def test_training_drops_p_of_the_states_on_a_cpu_and_keeps_their_mean():
    torch.manual_seed(0)
    x = torch.ones(1_000_003)  # not a multiple of the four lanes per draw
    out = lean.dropout(x, 0.1, True)
    assert out.shape == x.shape
    assert float((out == 0).float().mean()) == pytest.approx(0.1, abs=2e-3)
    assert float(out.mean()) == pytest.approx(1.0, abs=5e-3)  # kept values scaled by the exact inverse keep rate
    assert torch.equal(lean.dropout(x, 0.1, False), x) and torch.equal(lean.dropout(x, 0.0, True), x)
    kept = lean.drop(x.bfloat16(), 0.1, True)  # unscaled: the factor goes into the next linear operation
    assert kept.dtype == torch.bfloat16 and set(kept.unique().tolist()) == {0.0, 1.0}
    assert lean.drop_scale(0.1, True, x.device) == pytest.approx(1 / 0.9, rel=1e-4)
    assert lean.drop_scale(0.1, False, x.device) == 1.0


def test_a_training_step_draws_no_per_element_dropout_mask(monkeypatch):
    """PyTorch's CPU dropout draws one random number per element (38 % of a step, docs/performance.md)."""
    model = tiny_tiger().train()
    monkeypatch.setattr(torch.Tensor, "bernoulli_", lambda *a, **k: pytest.fail("per-element dropout mask drawn"))
    monkeypatch.setattr(torch.nn.functional, "dropout", lambda *a, **k: pytest.fail("PyTorch's dropout ran"))
    batch = model.make_batch(pattern_split(4), np.arange(8), "cpu")
    first = model.loss(batch)
    first.backward()
    assert not torch.equal(first, model.loss(batch))  # dropout is on: two passes differ
    model.eval()
    assert torch.equal(model.loss(batch), model.loss(batch))


def test_tigers_teacher_forced_pass_is_the_librarys_forward():
    model = tiny_tiger().eval()
    batch = model.make_batch(pattern_split(4), np.arange(8), "cpu")
    out = model.teacher_forced(batch)
    reference = model.t5(inputs_embeds=model.t5.shared(batch["input_ids"]), attention_mask=batch["attention_mask"],
                         decoder_input_ids=decoder_input_ids(batch["labels"]), output_hidden_states=True)
    torch.testing.assert_close(out.logits, reference.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.encoded, reference.encoder_last_hidden_state, rtol=0, atol=1e-5)
    torch.testing.assert_close(out.decoded, reference.decoder_hidden_states[-1], rtol=0, atol=1e-5)


def test_weights_keep_the_librarys_names():
    """A model folder stores ``t5.<the library's name>``: folders written before and after load alike."""
    model = tiny_tiger()
    library = T5ForConditionalGeneration(model.t5.config)
    assert {f"t5.{name}" for name in library.state_dict()} <= set(model.state_dict())


def test_a_trained_models_search_returns_the_lists_of_the_librarys_encoder(tmp_path):
    """The search's encoder pass is the lean one; on a trained model it ranks as the library's encoder did."""
    train = pattern_split()
    model = tiny_tiger()
    cfg = TrainConfig(epochs=30, batch_size=32, lr=1e-2, weight_decay=0.0, warmup_steps=20, eval_every=30,
                      patience=100, beam_size=10, precision="fp32")
    Trainer(model, train, train, cfg, tmp_path, seed=0, device="cpu", log=lambda *_: None).fit()
    model.eval()
    batch = model.make_batch(train, np.arange(64), "cpu")
    items, scores = model.beam_search(batch, beam_size=10)
    encoded = model.t5.encoder(inputs_embeds=model.embed_encoder(batch),
                               attention_mask=batch["attention_mask"]).last_hidden_state
    library_items, library_scores = model.beam_search(batch, beam_size=10, encoded=encoded)
    assert torch.equal(items, library_items)
    torch.testing.assert_close(scores, library_scores, rtol=0, atol=1e-5)
    assert float((items[:, 0] == batch["target"]).float().mean()) > 0.3  # it trained (chance: 1 in 40)
    assert int(items.max()) < N_ITEMS


def test_length_groups_cover_every_row_once_and_split_only_where_padding_costs():
    assert lean.length_groups([81] * 200 + [79] * 56) is None  # nearly one length: one group
    lengths = [9] * 120 + [17] * 60 + [81] * 10 + [5] * 66  # the Amazon Scientific shape: short, a few long
    groups = lean.length_groups(lengths)
    rows = sorted(row for group, _ in groups for row in group)
    assert rows == list(range(len(lengths)))
    for group, width in groups:
        assert width == max(lengths[row] for row in group)
    padded = sum(len(group) * width for group, width in groups)
    assert padded < 0.5 * len(lengths) * max(lengths)


def test_the_encoder_in_length_groups_computes_the_padded_batchs_states(monkeypatch):
    t5 = library_t5().eval()
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([2, 3, 3, 2, 40, 4, 2, 3] * 4)
    mask = (torch.arange(40)[None, :] < lengths[:, None]).long()
    embeds = torch.randn(32, 40, 16, generator=g)
    monkeypatch.setattr(lean, "GROUP_TOKENS", 16)  # a split pays off in a batch this small
    assert lean.length_groups(lengths.tolist()) is not None  # the batch is split
    grouped = lean.encode(t5, embeds, mask)
    monkeypatch.setattr(lean, "GROUP_LENGTHS", False)
    padded = lean.encode(t5, embeds, mask)
    real = mask.bool()
    torch.testing.assert_close(grouped[real], padded[real], rtol=0, atol=1e-5)
    assert grouped.shape == padded.shape
