"""DECOR on TIGER's backbone: exact reduction to TIGER, frozen codebooks, composition weights, decoding."""
import numpy as np
import pytest
import torch

from pipeline.config import ParamsError, TrainConfig
from pipeline.experiment import build_method
from pipeline.models.decor import Decor, DecorConfig
from pipeline.models.tiger import BOS, FIRST_CODE, Tiger, TigerConfig
from pipeline.training import Trainer
from tests.test_tiger import DEPTH, K, N_ITEMS, catalogue, every_item_log_probability, pattern_split

SIZES = dict(n_items=N_ITEMS, depth=DEPTH, codebook_size=K, d_model=32, num_layers=1, num_decoder_layers=1,
             num_heads=2, d_kv=16, d_ff=64, dropout=0.0)
ALL_OFF = dict(fusion=False, composition=False, bos_queries=0)


def codebooks(seed=0, e=8):
    return torch.randn(DEPTH - 1, K, e, generator=torch.Generator().manual_seed(seed))


def decor(seed=0, **switches):
    torch.manual_seed(seed)
    return Decor(DecorConfig(**SIZES, **switches), catalogue(), codebooks())


def batch_of(model, n=6):
    return model.make_batch(pattern_split(4), np.arange(n), "cpu")


def test_with_every_component_off_decor_computes_tigers_logits_from_the_same_weights():
    torch.manual_seed(0)
    tiger = Tiger(TigerConfig(**SIZES), catalogue()).eval()
    model = decor(seed=1, **ALL_OFF).eval()
    model.load_state_dict(tiger.state_dict(), strict=True)  # no extra module when everything is off
    batch = batch_of(tiger)
    assert torch.equal(model.logits(batch), tiger.logits(batch))
    items_t, scores_t = tiger.beam_search(batch, 8)
    items_d, scores_d = model.beam_search(batch, 8)
    assert torch.equal(items_t, items_d) and torch.allclose(scores_t, scores_d)


@pytest.mark.parametrize("switches", [dict(fusion=True, composition=False, bos_queries=0),
                                      dict(fusion=False, composition=True, bos_queries=0),
                                      dict(fusion=False, composition=False, bos_queries=4)])
def test_each_component_alone_changes_the_logits(switches):
    torch.manual_seed(0)
    tiger = Tiger(TigerConfig(**SIZES), catalogue()).eval()
    model = decor(**switches).eval()
    model.load_state_dict(tiger.state_dict(), strict=False)
    batch = batch_of(tiger)
    assert not torch.allclose(model.logits(batch), tiger.logits(batch))


def test_frozen_codebooks_stay_unchanged_while_the_collaborative_table_learns(tmp_path):
    model = decor(bos_queries=4)
    before = model.semantic_table.clone()
    assert not any(p is model.semantic_table for p in model.parameters())
    table = model.t5.shared.weight.detach().clone()
    train = pattern_split(20)
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-2, warmup_steps=1, eval_every=5, patience=5, beam_size=10)
    Trainer(model, train, train, cfg, tmp_path, seed=0, device="cpu", log=lambda *_: None).fit()
    assert torch.equal(model.semantic_table, before)
    # the semantic table holds the codebooks themselves (levels 1..L), zeros for the collision level
    assert torch.equal(before[FIRST_CODE : FIRST_CODE + (DEPTH - 1) * K], codebooks().reshape(-1, 8))
    assert not before[FIRST_CODE + (DEPTH - 1) * K :].any()
    assert not torch.equal(model.t5.shared.weight.detach(), table)  # the collaborative table was trained

    model.zero_grad()
    model.train()
    model.loss(batch_of(model)).backward()
    grad = model.t5.shared.weight.grad
    assert grad is not None and grad[FIRST_CODE:].abs().sum() > 0
    assert model.semantic_proj.weight.grad.abs().sum() > 0  # the semantic branch is used and trained


def test_composition_weights_sum_to_one_over_each_levels_codes():
    model = decor().eval()
    batch = batch_of(model)
    composed, weights = model.composition_weights(model.context(batch))
    assert weights.shape == (6, DEPTH - 1, K) and composed.shape == (6, DEPTH - 1, 32)
    assert torch.allclose(weights.sum(-1), torch.ones(6, DEPTH - 1), atol=1e-6)
    assert (weights >= 0).all()


def test_context_ignores_padding_and_eos():
    model = decor().eval()
    batch = batch_of(model)
    u = model.context(batch)
    # changing what sits under PAD positions (masked out) must not move the context
    altered = dict(batch)
    ids = batch["input_ids"].clone()
    ids[batch["attention_mask"] == 0] = FIRST_CODE + 5
    altered["input_ids"], altered["attention_mask"] = ids, batch["attention_mask"]
    pad_rows = (batch["attention_mask"] == 0).any(1)
    assert pad_rows.any()
    assert not torch.allclose(model.context(altered)[pad_rows], u[pad_rows])  # sanity: codes there do count
    ids = batch["input_ids"].clone()
    ids[ids < FIRST_CODE] = 0  # EOS -> PAD: both are excluded from the pooling
    altered["input_ids"] = ids
    assert torch.allclose(model.context(altered), u)


def test_beam_scores_equal_teacher_forced_log_probabilities_with_every_component_on():
    """The incremental decoder feeds composed embeddings step by step; its scores must match a full pass."""
    model = decor(bos_queries=4).eval()
    batch = batch_of(model, 3)
    items, scores = model.beam_search(batch, beam_size=N_ITEMS)
    assert ((items >= 0) & (items < N_ITEMS)).all()
    for row in range(3):
        assert torch.allclose(every_item_log_probability(model, batch, row)[items[row]], scores[row], atol=1e-4)


def test_cosine_scores_bound_the_composition_weights_whatever_the_key_scale():
    model = decor(scores="cosine", temperature=0.5, bos_queries=0)
    with torch.no_grad():
        model.compose_k.weight.mul_(1000.0)  # keys 1000x larger: a dot product would be one-hot
        u = torch.randn(4, SIZES["d_model"])
        _, weights = model.composition_weights(u)
    ratio = weights.max(dim=-1).values / weights.min(dim=-1).values
    assert (ratio <= np.exp(2 / 0.5) * (1 + 1e-4)).all()
    dot = decor(bos_queries=0)
    with torch.no_grad():
        dot.compose_k.weight.copy_(model.compose_k.weight)
        dot.compose_q.weight.copy_(model.compose_q.weight)
        _, dot_weights = dot.composition_weights(u)
    assert dot_weights.max() > weights.max()  # the unbounded scale saturates; the bounded one does not


def test_a_centred_context_is_the_pooled_one_minus_the_mean_code_embedding():
    pooled, centred = decor(bos_queries=0), decor(bos_queries=0, context="centred")
    batch = batch_of(pooled)
    for model in (pooled, centred):
        model.context_mlp = torch.nn.Identity()  # compare what goes into the MLP
    codes = FIRST_CODE + torch.arange((DEPTH - 1) * K)
    with torch.no_grad():
        shift = centred.token_embeddings(codes).mean(0)
        torch.testing.assert_close(centred.context(batch), pooled.context(batch) - shift)


def test_alpha_zero_interpolation_leaves_code_embeddings_static():
    model = decor(alpha=0.0, bos_queries=0, fusion=False).eval()
    tokens = torch.tensor([[BOS, FIRST_CODE + 1, FIRST_CODE + K + 2]])
    batch = batch_of(model, 1)
    assert torch.allclose(model.embed_decoder(tokens, batch, 0), model.t5.shared(tokens))


def test_epoch_diagnostics_report_per_level_usage_then_reset():
    model = decor(bos_queries=4).train()
    model.loss(batch_of(model))
    stats = model.epoch_diagnostics()
    assert {f"composition_active_l{level}" for level in range(1, DEPTH)} <= set(stats)
    assert all(0.0 <= v <= 1.0 for k, v in stats.items())
    assert "bos_active" in stats
    assert model.epoch_diagnostics() == {}


def test_per_sample_statistics_tell_a_collapse_from_a_composition_and_the_guard_names_the_level():
    model = decor(bos_queries=0).train()
    levels = DEPTH - 1
    # collapsed: every sample puts all its weight on code 3 of every level
    collapsed = torch.zeros(8, levels, K)
    collapsed[:, :, 3] = 1.0
    model._record(collapsed, "_weight_sums")
    with pytest.warns(UserWarning, match="collapsed at level 1: code 3"):
        stats = model.epoch_diagnostics()
    assert stats["composition_max_l1"] == 1.0 and stats["composition_sample_onehot_l1"] == 1.0
    assert stats["composition_winners_l1"] == 1 / K and stats["composition_sample_entropy_l1"] == pytest.approx(0)
    # composing: each sample one-hot on its own code. The epoch mean looks spread (as a composition that
    # differs per user should), while per sample every weight is one-hot: only the per-sample figures say so
    spread = torch.zeros(8, levels, K)
    spread[torch.arange(8), :, torch.arange(8) % K] = 1.0
    model._record(spread, "_weight_sums")
    stats = model.epoch_diagnostics()
    assert stats["composition_max_l1"] == pytest.approx(1 / min(8, K))
    assert stats["composition_sample_onehot_l1"] == 1.0 and stats["composition_winners_l1"] == min(8, K) / K
    assert stats["composition_active_per_sample_l1"] == min(8, K) / K
    # uniform weights: no sample has a winner above 1/K, every code reaches 1/K
    model._record(torch.full((8, levels, K), 1.0 / K), "_weight_sums")
    stats = model.epoch_diagnostics()
    assert stats["composition_sample_onehot_l1"] == 0.0 and stats["composition_active_per_sample_l1"] == 1.0
    assert stats["composition_sample_entropy_l1"] == pytest.approx(1.0)


def _ids_workspace(workspace, codes=None):
    workspace.write_ids("rq", catalogue().numpy() if codes is None else codes, K)
    return "data/processed/semantic_ids/rq"


def _params(workspace, model, backbone=None):
    return workspace.params({model: {"model": model, "inputs": ["data/processed/semantic_ids/rq"],
                                     "backbone": backbone or {}}})


def test_bad_decor_settings_are_params_errors(workspace):
    _ids_workspace(workspace)
    for bad in ({"alpha": 1.5}, {"residual": "sum"}, {"bos_querys": 4}):
        with pytest.raises(ParamsError, match="methods.decor.backbone"):
            build_method(_params(workspace, "decor", bad), "decor")


def test_unusable_semantic_ids_stop_model_construction_naming_the_folder_and_items(workspace):
    codes = catalogue().numpy()
    codes[7] = codes[3]  # two items with one ID
    sid_dir = _ids_workspace(workspace, codes)
    for model in ("tiger", "decor"):
        with pytest.raises(ParamsError, match=rf"{sid_dir}.*items 3 and 7 share the ID"):
            build_method(_params(workspace, model), model)
    codes = catalogue().numpy()
    codes[5, 1] = K  # a code the codebook does not have
    _ids_workspace(workspace, codes)
    with pytest.raises(ParamsError, match=rf"item 5 has the ID .* codes must lie in \[0, {K}\)"):
        build_method(_params(workspace, "tiger"), "tiger")
