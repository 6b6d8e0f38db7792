"""The switches that make a method its paper's: LETTER's ranking-guided generation loss, a search wider than
the list (DECOR's 50 beams), a method's own history length. Each reduces exactly to TIGER's behaviour when off
and changes it when on."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from pipeline.config import ParamsError, params_from_dict
from pipeline.models.tiger.model import Tiger, token_loss
from tests.test_tiger import catalogue, pattern_split, tiny_tiger


def with_config(model: Tiger, **changes) -> Tiger:
    """The same weights under another config (the switches do not change the parameters)."""
    twin = Tiger(type(model.config).from_dict({**model.config.to_dict(), **changes}), catalogue())
    twin.load_state_dict(model.state_dict())
    return twin


def test_temperature_1_is_the_plain_loss_bit_for_bit_and_another_divides_the_logits():
    model = tiny_tiger().eval()
    batch = model.make_batch(pattern_split(8), np.arange(12), "cpu")
    logits = model.logits(batch)
    plain = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch["labels"].reshape(-1))
    assert torch.equal(model.loss(batch), plain)
    sharp = with_config(model, loss_temperature=0.5).eval()
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float() / 0.5, batch["labels"].reshape(-1))
    assert torch.allclose(sharp.loss(batch), expected, atol=1e-6)
    assert not torch.allclose(sharp.loss(batch), plain)


def test_a_low_temperature_weights_the_hard_negatives_more():
    """LETTER §3.3: below 1, the gradient on the logits moves towards the codes scored closest to the target."""
    logits = torch.tensor([[[4.0, 3.5, 0.0, -2.0]]], requires_grad=True)
    labels = torch.tensor([[0]])
    shares = {}
    for tau in (1.0, 0.5):
        (grad,) = torch.autograd.grad(token_loss(logits, labels, tau), logits)
        negatives = grad[0, 0, 1:]
        shares[tau] = float(negatives[0] / negatives.sum())  # the hard negative's share of the push
    assert shares[0.5] > shares[1.0]


def test_a_search_wider_than_the_list_keeps_its_best_items_and_width_0_is_the_list_length():
    model = tiny_tiger().eval()
    batch = model.make_batch(pattern_split(8), np.arange(6), "cpu")
    narrow, _ = model.beam_search(batch, beam_size=5)
    assert torch.equal(model.rank(batch, 5), narrow)
    wide_model = with_config(model, beam_width=20).eval()
    wide, _ = wide_model.beam_search(batch, beam_size=20)
    ranked = wide_model.rank(batch, 5)
    assert ranked.shape == (6, 5) and torch.equal(ranked, wide[:, :5])


def test_switch_values_are_checked():
    for bad in ({"loss_temperature": 0.0}, {"beam_width": -1}, {"beam_width": 2.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            with_config(tiny_tiger(), **bad)


def test_a_method_reads_its_own_history_length_and_no_more_than_the_filter_kept(workspace):
    from pipeline.training.method import build_method
    from tests.conftest import TINY_T5, TINY_TRAIN

    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8)
    block = {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"], "backbone": TINY_T5,
             "train": TINY_TRAIN}
    params = workspace.params({"tiger": block, "short": {**block, "max_history": 3}})
    assert params.filter.max_history > 3
    long_model, _ = build_method(params, "tiger")
    short_model, _ = build_method(params, "short")
    assert long_model.config.max_history == params.filter.max_history
    assert short_model.config.max_history == 3
    split = pattern_split(4, length=8)
    row = int(np.argmax(split.lengths(np.arange(len(split)))))  # a history longer than 3
    batch = short_model.make_batch(split, np.array([row]), "cpu")
    assert int(batch["attention_mask"].sum()) == 3 * short_model.config.depth + 1  # the 3 most recent, then EOS
    raw = yaml.safe_load(open("params.yaml"))
    raw["methods"]["short"]["max_history"] = params.filter.max_history + 1
    with pytest.raises(ParamsError, match=r"methods\.short\.max_history.*filter\.max_history"):
        params_from_dict(raw)


def test_the_paper_blocks_of_params_yaml_carry_their_switches():
    from pathlib import Path

    from pipeline.config import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    assert params.method("letter").backbone.get("loss_temperature", 1.0) == 1.0  # LETTER's released scripts
    assert params.method("letter_ranking_loss").backbone["loss_temperature"] < 1.0  # LETTER §3.3, tau < 1
    assert params.method("letter_ranking_loss").inputs == params.method("letter").inputs
    assert params.method("decor").backbone.get("beam_width") == 50  # DECOR appendix
    for name in ("tiger", "discrec_t", "discrec_l"):  # plain cross-entropy (DiscRec's code), the list's width
        backbone = params.method(name).backbone
        assert backbone.get("loss_temperature", 1.0) == 1.0 and backbone.get("beam_width", 0) == 0
