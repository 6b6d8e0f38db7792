"""DECOR on TIGER's backbone: exact reduction to TIGER, frozen codebooks, composition weights, decoding."""
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.config import ParamsError, TrainConfig, load_params
from pipeline.models.decor import Decor, DecorConfig, user_code_information
from pipeline.models.tiger.model import BOS, FIRST_CODE, Tiger, TigerConfig
from pipeline.training.method import build_method
from pipeline.training.trainer import Trainer
from tests.test_tiger import DEPTH, N_ITEMS, K, catalogue, every_item_log_probability, pattern_split

SIZES = dict(n_items=N_ITEMS, depth=DEPTH, codebook_size=K, d_model=32, num_layers=1, num_decoder_layers=1,
             num_heads=2, d_kv=16, d_ff=64, dropout=0.0)
ALL_OFF = dict(fusion=False, composition=False, bos_queries=0)
REPO = Path(__file__).resolve().parents[1]


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


@pytest.mark.parametrize("setting", ["paper", "default"])
def test_beam_scores_equal_teacher_forced_log_probabilities_with_every_component_on(setting):
    """The incremental decoder feeds composed embeddings step by step; its scores must match a full pass,
    with the paper's composition and with params.yaml's (batch-standardised context, cosine scores)."""
    switches = default_composition_switches() if setting == "default" else {}
    model = decor(bos_queries=4, **switches)
    model.train()
    model.loss(batch_of(model, 6))  # running statistics that are not the initial ones
    model.eval()
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
    model._record(collapsed, "composition")
    with pytest.warns(UserWarning, match="collapsed at level 1: code 3"):
        stats = model.epoch_diagnostics()
    assert stats["composition_max_l1"] == 1.0 and stats["composition_sample_onehot_l1"] == 1.0
    assert stats["composition_winners_l1"] == 1 / K and stats["composition_sample_entropy_l1"] == pytest.approx(0)
    # composing: each sample one-hot on its own code. The epoch mean looks spread (as a composition that
    # differs per user should), while per sample every weight is one-hot: only the per-sample figures say so
    spread = torch.zeros(8, levels, K)
    spread[torch.arange(8), :, torch.arange(8) % K] = 1.0
    model._record(spread, "composition")
    stats = model.epoch_diagnostics()
    assert stats["composition_max_l1"] == pytest.approx(1 / min(8, K))
    assert stats["composition_sample_onehot_l1"] == 1.0 and stats["composition_winners_l1"] == min(8, K) / K
    assert stats["composition_active_per_sample_l1"] == min(8, K) / K
    # uniform weights: no sample has a winner above 1/K, every code reaches 1/K
    model._record(torch.full((8, levels, K), 1.0 / K), "composition")
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


def two_taste_split(n_users: int, seed: int = 0):
    """Even users walk item -> (7 * item + 3) % N, odd users item -> (5 * item + 1) % N, from a random start:
    the same last item has another next item for each taste, which only the history tells."""
    starts = np.random.default_rng(seed).integers(N_ITEMS, size=n_users)
    return pattern_split(n_users, 8, walk=lambda user, item: ((7, 5)[user % 2] * item + (3, 1)[user % 2]) % N_ITEMS,
                         first=lambda user: int(starts[user]))


def composition_after_training(tmp_path, **switches):
    """Train a tiny DECOR (composition only) on two tastes; return, on unseen users with >= 4 history items,
    I(user; code) / log K per level and the total-variation distance between the two tastes' mean weights."""
    torch.manual_seed(0)
    model = Decor(DecorConfig(**{**SIZES, "dropout": 0.1}, fusion=False, bos_queries=0, **switches),
                  catalogue(), codebooks())
    cfg = TrainConfig(epochs=5, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=100, patience=5, beam_size=10)
    Trainer(model, two_taste_split(80), two_taste_split(80), cfg, tmp_path, seed=0, device="cpu",
            log=lambda *_: None).fit()
    model.eval()
    test = two_taste_split(40, seed=1)
    rows = np.flatnonzero(np.diff(test.offsets) >= 4)
    batch = model.make_batch(test, rows, "cpu")
    with torch.inference_mode():
        _, weights = model.composition_weights(model.encode(batch)[0]["context"])
    taste = test.users[rows] % 2
    distance = 0.5 * (weights[taste == 0].mean(0) - weights[taste == 1].mean(0)).abs().sum(-1)
    return user_code_information(weights), distance


def default_composition_switches() -> dict:
    """The composition switches of params.yaml's decor block (the default chosen on validation)."""
    backbone = load_params(REPO / "params.yaml").method("decor").backbone
    return {k: backbone[k] for k in ("scores", "temperature", "context", "context_norm", "diversity_weight")}


@pytest.mark.filterwarnings("ignore:DECOR composition collapsed")
def test_the_default_composition_composes_per_user_where_the_papers_collapses(tmp_path):
    """A synthetic task (docs/decor_collapse.md): the best composition depends on the user's taste. Measure: the mutual
    information between users and codes over their composition weights, I(user; code) / log K per level (0:
    every user has the same weights), and how far the two tastes' mean weights lie apart (total variation)."""
    information, distance = composition_after_training(tmp_path / "default", **default_composition_switches())
    assert (information > 0.1).all() and (distance > 0.1).all(), (information, distance)
    # the paper's context and scores on the same task, seed and budget: one code per level for every user
    information, distance = composition_after_training(tmp_path / "paper", context_norm="none", scores="dot")
    assert (information < 0.02).all() and (distance < 0.02).all(), (information, distance)


def test_the_batch_standardised_context_removes_what_every_user_shares():
    model = decor(bos_queries=0, context_norm="batch").train()
    paper = decor(bos_queries=0).train()  # the same weights, u = MLP(pooled)
    batch = batch_of(model, 6)
    u, raw = model.context(batch), paper.context(batch)
    expected = (raw - raw.mean(0)) / (raw.var(0, unbiased=False) + model.context_standardiser.eps).sqrt()
    torch.testing.assert_close(u, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(u.mean(0), torch.zeros_like(u[0]), atol=1e-5, rtol=0)
    # one user in training, and any batch at inference: the running statistics, no batch dependence
    single = model.context({k: v[:1] for k, v in batch.items()})
    model.eval()
    torch.testing.assert_close(single, model.context({k: v[:1] for k, v in batch.items()}))
    torch.testing.assert_close(model.context(batch)[:1], single)


def test_user_code_information_is_zero_for_a_shared_composition_and_one_for_distinct_one_hot_codes():
    shared = torch.softmax(torch.randn(1, 2, 8), -1).expand(5, 2, 8)
    assert torch.allclose(user_code_information(shared), torch.zeros(2), atol=1e-6)
    distinct = torch.eye(8)[:, None, :].expand(8, 2, 8)  # user i one-hot on code i: I = log 8
    assert torch.allclose(user_code_information(distinct), torch.ones(2))


def test_the_diversity_bonus_lowers_the_loss_by_its_weight_times_the_information():
    plain = decor(bos_queries=0).train()
    bonus = decor(bos_queries=0, diversity_weight=0.5).train()
    bonus.load_state_dict(plain.state_dict())
    batch = batch_of(plain)
    torch.manual_seed(1)
    base = plain.loss(batch)
    torch.manual_seed(1)
    with_bonus = bonus.loss(batch)
    _, weights = plain.composition_weights(plain.context(batch))
    torch.testing.assert_close(with_bonus, base - 0.5 * user_code_information(weights.float()).mean())


def test_an_encoder_context_pools_the_encoders_output_states_and_decodes_as_it_trains():
    model = decor(bos_queries=4, context="encoder").eval()
    batch = batch_of(model, 3)
    encoded = model.t5.encoder(inputs_embeds=model.embed_encoder(batch),
                               attention_mask=batch["attention_mask"]).last_hidden_state
    torch.testing.assert_close(model.encode(batch)[0]["context"], model.context(batch, encoded))
    items, scores = model.beam_search(batch, beam_size=N_ITEMS)
    for row in range(3):
        assert torch.allclose(every_item_log_probability(model, batch, row)[items[row]], scores[row], atol=1e-4)


def direct_level_statistics(model, u: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """The composition weights (B, levels, K) and a few of diagnose()'s figures, from the formulas themselves."""
    d, levels = model.config.d_model, DEPTH - 1
    x = model.token_embeddings(FIRST_CODE + torch.arange(levels * K).view(levels, K))  # (levels, K, d)
    q, k, v = u @ model.compose_q.weight.T, x @ model.compose_k.weight.T, x @ model.compose_v.weight.T
    if model.config.scores == "cosine":
        scores = torch.einsum("bd,lkd->blk", q / q.norm(dim=-1, keepdim=True),
                              k / k.norm(dim=-1, keepdim=True)) / model.config.temperature
    else:
        scores = torch.einsum("bd,lkd->blk", q, k) / d ** 0.5
    weights = torch.softmax(scores, dim=-1)
    B = u.shape[0]
    unit = q / q.norm(dim=-1, keepdim=True)
    expected = {"query_cos_mean": float(((unit @ unit.T).sum() - B) / (B * (B - 1)))}
    for level in range(levels):
        w, p = weights[:, level], f"l{level + 1}_"
        winners = w.argmax(dim=1)
        top = int(torch.bincount(winners, minlength=K).argmax())
        best_two = scores[:, level].topk(2, dim=1).values
        expected.update({p + "max_mean": float(w.max(dim=1).values.mean()),
                         p + "distinct_winners": len(set(winners.tolist())),
                         p + "top_winner_share": float((winners == top).float().mean()),
                         p + "active_epoch_mean_rule": float((w.mean(0) >= 1 / K).float().mean()),
                         p + "active_per_sample_rule": float(((w >= 1 / K).float().mean(0) >= 0.01).float().mean()),
                         p + "query_norm": float(q.norm(dim=1).mean()),
                         p + "winner_key_norm": float(k[level, top].norm()),
                         p + "score_gap_top2": float((best_two[:, 0] - best_two[:, 1]).mean()),
                         p + "value_norm_winner": float(v[level, top].norm())})
    return weights, expected


@pytest.mark.parametrize("switches", [{}, dict(scores="cosine", temperature=0.5, context_norm="batch")])
def test_diagnose_reports_the_composition_attention_as_the_formulas_give_it(switches):
    model = decor(bos_queries=0, **switches).train()
    batch = batch_of(model, 8)
    with torch.no_grad():
        u = model.context(batch)
        weights, expected = direct_level_statistics(model, u)
        torch.testing.assert_close(model.composition_weights(u)[1], weights)  # the forward's own weights
    stats = model.diagnose({**batch, "context": u})
    assert {f"l{level}_onehot_share" for level in range(1, DEPTH)} <= set(stats)
    for key, value in expected.items():
        assert stats[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    # without a context of its own, the batch's u is the one the decoder gets at inference
    model.eval()
    assert model.diagnose(batch) == model.diagnose({**batch, "context": model.encode(batch)[0]["context"]})


def test_diagnose_leaves_the_model_and_the_random_generator_as_they_were():
    """A diagnosis between training steps must not move training: the next step's loss and the batch
    standardiser's running statistics are those of a run that never diagnosed."""
    plain = Decor(DecorConfig(**{**SIZES, "dropout": 0.1}, bos_queries=4, context_norm="batch"), catalogue(),
                  codebooks()).train()
    diagnosed = Decor(DecorConfig(**{**SIZES, "dropout": 0.1}, bos_queries=4, context_norm="batch"), catalogue(),
                      codebooks()).train()
    diagnosed.load_state_dict(plain.state_dict())
    batch = batch_of(plain)
    given = torch.randn(6, SIZES["d_model"], generator=torch.Generator().manual_seed(5))
    standardiser = {k: v.clone() for k, v in plain.context_standardiser.state_dict().items()}
    torch.manual_seed(1)
    base = plain.loss(batch)
    torch.manual_seed(1)
    diagnosed.diagnose(batch)  # computes its own context, in eval mode
    diagnosed.diagnose({**batch, "context": given})
    assert diagnosed.training
    for key, value in diagnosed.context_standardiser.state_dict().items():
        assert torch.equal(value, standardiser[key]), key
    assert torch.equal(diagnosed.loss(batch), base)
