"""RQ-VAE (pipeline/tokenizers/rqvae.py, its training pipeline/tokenizers/rqvae_training.py) on synthetic clustered
data; CPU, a few seconds in total."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.tokenizer_schemas import RQVAETokenizer
from pipeline.tokenizers.rqvae import (
    RQVAE,
    RQVAE_CONFIG_FILE,
    RQVAE_WEIGHTS_FILE,
    RQVAEConfig,
    kmeans,
    load_rqvae,
    resolve_device,
    save_rqvae,
)
from pipeline.tokenizers.rqvae_training import train_rqvae
from pipeline.tokenizers.semantic_ids import collision_stats

N_CLUSTERS = 8
IN_DIM = 32
# Small but complete: one hidden layer, e = 16, TIGER's L = 3, K = 8 (one level-1 code per cluster).
CONFIG = RQVAEConfig(in_dim=IN_DIM, hidden=(64,), code_dim=16, levels=3, codebook_size=8)
TRAIN = dict(epochs=100, batch_size=256, lr=1e-2, optimizer="adamw", weight_decay=1e-4, progress=False)


def fit(z, config: RQVAEConfig = CONFIG, *, seed: int = 0, on_epoch=None, progress: bool = False, regulariser=None,
        **settings):
    """``train_rqvae`` on a params block with ``config``'s network and ``settings``' schedule; the schedule defaults
    to one without early stopping or restarts, on CPU (what these tests measure)."""
    network = {k: v for k, v in config.to_dict().items() if k in RQVAETokenizer.model_fields}
    block = RQVAETokenizer(**{"dead_code_restart": False, "patience": 0, "device": "cpu", **network, **settings})
    return train_rqvae(z, block, seed=seed, on_epoch=on_epoch, progress=progress, regulariser=regulariser)


def clustered_data(seed: int = 0, n: int = 2000, rank: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """8 well-separated clusters in 32-d; inside each, variation along 4 cluster-specific directions
    (structure that levels 2 and 3 can quantise) plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(N_CLUSTERS, IN_DIM)) * 2.0  # centre distances ~16 vs within-cluster std ~2
    basis = rng.normal(size=(N_CLUSTERS, rank, IN_DIM))
    basis /= np.linalg.norm(basis, axis=2, keepdims=True)
    labels = np.arange(n) % N_CLUSTERS
    u = rng.normal(size=(n, rank))
    z = centers[labels] + np.einsum("nr,nrd->nd", u, basis[labels]) + 0.05 * rng.normal(size=(n, IN_DIM))
    return z.astype(np.float32), labels


@pytest.fixture(scope="module")
def data():
    return clustered_data()


@pytest.fixture(scope="module")
def trained(data):
    z, _ = data
    seen: list[tuple[int, dict]] = []
    model, history = fit(z, CONFIG, seed=0, on_epoch=lambda e, m: seen.append((e, m)), **TRAIN)
    return model, history, seen


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def level1_table(codes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(clusters x K) counts of level-1 codes per true cluster."""
    return np.stack([np.bincount(codes[labels == c, 0], minlength=CONFIG.codebook_size) for c in range(N_CLUSTERS)])


def assert_recovers_clusters(codes: np.ndarray, labels: np.ndarray) -> None:
    table = level1_table(codes, labels)
    purity = table.max(1) / table.sum(1)
    assert (purity > 0.9).all(), f"a cluster is spread over several level-1 codes:\n{table}"
    assert len(set(table.argmax(1).tolist())) == N_CLUSTERS, f"clusters share a level-1 code:\n{table}"


def test_level1_codes_recover_the_clusters(data, trained):
    # Deterministic for seed 0 on CPU. Across seeds, purity stays > 0.99, but in about 1 run in 6
    # training drifts two clusters onto one level-1 code (K equals the number of clusters here, so
    # there is no spare code; levels 2-3 then tell them apart). If only the "share a level-1 code"
    # assertion fails after a torch/CPU change, try another seed before suspecting a bug.
    z, labels = data
    model, _, _ = trained
    assert_recovers_clusters(model.encode_codes(torch.from_numpy(z)).numpy(), labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_init_alone_recovers_the_clusters(data, seed):
    # The first-batch k-means initialisation (TIGER) already finds the clusters through a random encoder.
    z, labels = data
    torch.manual_seed(seed)
    model = RQVAE(CONFIG)
    model.init_codebooks(torch.from_numpy(z[:256]), generator=torch.Generator().manual_seed(seed))
    assert_recovers_clusters(model.encode_codes(z).numpy(), labels)


def test_utilisation_and_collisions(data, trained):
    z, _ = data
    model, history, _ = trained
    final = history[-1]
    for level in range(1, CONFIG.levels + 1):
        assert final[f"util_l{level}"] >= 0.75, final
    codes = model.encode_codes(z).numpy()
    stats = collision_stats(codes)
    # The epoch metric uses the same definition as semantic_ids.py.
    assert final["collision_rate"] == pytest.approx(stats["collision_rate"])
    # 2000 items in K^L = 512 tuples must collide (pigeonhole), so "low" is judged against collapse:
    # deeper levels must spread each 250-item cluster over many tuples.
    assert stats["n_unique_tuples"] >= 0.4 * CONFIG.codebook_size ** CONFIG.levels, stats
    assert stats["largest_group"] <= 60, stats
    # ... and on a catalogue smaller than the ID space most items are alone with their tuple.
    assert collision_stats(codes[:100])["collision_rate"] < 0.6


def test_history_and_callback(trained):
    _, history, seen = trained
    assert [e for e, _ in seen] == list(range(1, TRAIN["epochs"] + 1))
    assert [h["epoch"] for h in history] == list(range(1, TRAIN["epochs"] + 1))
    expected = {"loss", "recon_loss", "rq_loss", "util_l1", "util_l2", "util_l3", "collision_rate"}
    assert set(seen[-1][1]) == expected
    assert history[-1] == {"epoch": TRAIN["epochs"], **seen[-1][1]}
    assert history[-1]["loss"] == pytest.approx(history[-1]["recon_loss"] + history[-1]["rq_loss"], rel=1e-5)
    assert history[-1]["recon_loss"] < 0.2 * history[0]["recon_loss"]  # it learned something


def test_same_seed_gives_identical_model_and_codes(data):
    z, _ = data
    short = {**TRAIN, "epochs": 5}
    a, ha = fit(z, CONFIG, seed=7, **short)
    b, hb = fit(z, CONFIG, seed=7, **short)
    c, _ = fit(z, CONFIG, seed=8, **short)
    assert np.array_equal(a.encode_codes(z).numpy(), b.encode_codes(z).numpy())
    sa, sb, sc = state(a), state(b), state(c)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ha == hb
    # A different seed gives a different model (codes may or may not coincide).
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_training_leaves_global_rng_untouched(data):
    z, _ = data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(z[:300], CONFIG, seed=0, **{**TRAIN, "epochs": 1})
    assert torch.equal(torch.rand(3), expected)


def test_save_load_round_trip(tmp_path, data, trained):
    z, _ = data
    model, _, _ = trained
    save_rqvae(model, CONFIG, tmp_path / "rq")
    assert sorted(p.name for p in (tmp_path / "rq").iterdir()) == sorted([RQVAE_WEIGHTS_FILE, RQVAE_CONFIG_FILE])
    assert json.loads((tmp_path / "rq" / RQVAE_CONFIG_FILE).read_text())["hidden"] == [64]
    loaded = load_rqvae(tmp_path / "rq")
    assert loaded.config == CONFIG and not loaded.training
    assert bool(loaded.initialized)
    s0, s1 = state(model), state(loaded)
    assert s0.keys() == s1.keys() and all(torch.equal(s0[k], s1[k]) for k in s0)
    assert torch.equal(loaded.encode_codes(torch.from_numpy(z)), model.encode_codes(torch.from_numpy(z)))
    # Saving again over an existing checkpoint works (atomic replace), and a wrong config is refused.
    save_rqvae(model, CONFIG, tmp_path / "rq")
    with pytest.raises(ValueError):
        save_rqvae(model, RQVAEConfig(in_dim=IN_DIM), tmp_path / "other")


def test_load_missing_directory_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=RQVAE_WEIGHTS_FILE):
        load_rqvae(tmp_path)


def test_encode_codes_batching_and_numpy_input(data, trained):
    z, _ = data
    model, _, _ = trained
    full = model.encode_codes(torch.from_numpy(z))
    assert full.dtype == torch.long and full.shape == (len(z), CONFIG.levels) and full.device.type == "cpu"
    assert torch.equal(model.encode_codes(z, batch_size=37), full)
    assert int(full.min()) >= 0 and int(full.max()) < CONFIG.codebook_size
    assert model.encode_codes(z[:0]).shape == (0, CONFIG.levels)


def test_straight_through_gradient_reaches_encoder(data):
    z, _ = data
    torch.manual_seed(0)
    model = RQVAE(CONFIG)
    out = model(torch.from_numpy(z[:64]))
    # Only the reconstruction loss: without the straight-through estimator the argmin would cut
    # every path from the decoder back to the encoder and these gradients would be None / zero.
    out["recon_loss"].backward()
    first = model.encoder[0].weight.grad
    assert first is not None and first.abs().sum() > 0
    assert model.codebooks.grad is None or model.codebooks.grad.abs().sum() == 0  # recon does not reach codes
    model.zero_grad()
    model(torch.from_numpy(z[:64]))["rq_loss"].backward()
    assert model.codebooks.grad.abs().sum() > 0  # the codebook term trains the codes
    assert model.encoder[0].weight.grad.abs().sum() > 0  # the commitment term trains the encoder


def test_rq_loss_value_and_stop_gradients_match_the_equation(data):
    z, _ = data
    x = torch.from_numpy(z[:32])
    # Value, L = 3: sum over levels of (1 + beta) * mean_b ||v_l - e_{c_l}||^2.
    torch.manual_seed(0)
    model = RQVAE(CONFIG)
    with torch.no_grad():
        r = model.encoder(x)
        codes, _, rq = model.quantize(r)
        v, expected = r, 0.0
        for level in range(CONFIG.levels):
            q = model.codebooks[level][codes[:, level]]
            expected += (1 + CONFIG.beta) * ((v - q) ** 2).sum(1).mean()
            v = v - q
    assert torch.allclose(rq, expected, rtol=1e-5)
    # Gradients, L = 1: d/de_k = 2/B sum_{b: c_b = k} (e_k - r_b) (codebook term only) and
    # d/dr_b = 2 beta/B (r_b - e_{c_b}) (commitment term only): checks where sg[.] sits.
    one = RQVAE(RQVAEConfig(**{**CONFIG.to_dict(), "levels": 1}))
    r = one.encoder(x).detach().requires_grad_(True)
    codes, _, rq = one.quantize(r)
    rq.backward()
    e = one.codebooks[0].detach()
    q = e[codes[:, 0]]
    B = len(x)
    expected_e = torch.zeros_like(e).index_add_(0, codes[:, 0], 2 / B * (q - r.detach()))
    assert torch.allclose(one.codebooks.grad[0], expected_e, atol=1e-6)
    assert torch.allclose(r.grad, 2 * CONFIG.beta / B * (r.detach() - q), atol=1e-6)


def test_forward_outputs(data):
    z, _ = data
    torch.manual_seed(0)
    model = RQVAE(CONFIG)
    out = model(torch.from_numpy(z[:10]))
    assert out["z_hat"].shape == (10, IN_DIM)
    assert out["codes"].shape == (10, CONFIG.levels) and out["codes"].dtype == torch.long
    assert torch.allclose(out["loss"], out["recon_loss"] + out["rq_loss"])
    # r_hat is the sum of the chosen codes: the residual left after L levels is r - r_hat.
    r = model.encoder(torch.from_numpy(z[:10]))
    codes, r_hat, _ = model.quantize(r)
    picked = sum(model.codebooks[level][codes[:, level]] for level in range(CONFIG.levels))
    assert torch.allclose(r_hat, picked)
    assert torch.equal(codes, out["codes"])


def test_recon_reduction_changes_scale_by_in_dim(data):
    z, _ = data
    torch.manual_seed(0)
    summed = RQVAE(CONFIG)
    meaned = RQVAE(RQVAEConfig(**{**CONFIG.to_dict(), "recon_reduction": "mean"}))
    meaned.load_state_dict(summed.state_dict())
    x = torch.from_numpy(z[:50])
    a, b = summed(x), meaned(x)
    assert torch.allclose(a["recon_loss"], b["recon_loss"] * IN_DIM, rtol=1e-5)
    assert torch.allclose(a["rq_loss"], b["rq_loss"])  # L_rq does not depend on the reduction


def test_kmeans_init_uses_first_batch_level_by_level(data):
    z, _ = data
    torch.manual_seed(0)
    model = RQVAE(CONFIG)
    assert not bool(model.initialized)
    batch = torch.from_numpy(z[:256])
    model.init_codebooks(batch, generator=torch.Generator().manual_seed(0))
    assert bool(model.initialized)
    with torch.no_grad():
        r = model.encoder(batch)
        # Level 1 is exactly k-means of r with the same generator state.
        expected = kmeans(r, CONFIG.codebook_size, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model.codebooks[0].detach(), expected)
    codes = model.encode_codes(batch)
    for level in range(CONFIG.levels):  # every code of every level starts in use
        assert len(torch.unique(codes[:, level])) == CONFIG.codebook_size


def test_kmeans_deterministic_and_few_points():
    x = torch.randn(40, 5, generator=torch.Generator().manual_seed(1))
    a = kmeans(x, 16, generator=torch.Generator().manual_seed(3))
    b = kmeans(x, 16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    # Fewer points than codes: still K finite, distinct centroids.
    few = kmeans(x[:5], 16, generator=torch.Generator().manual_seed(3))
    assert few.shape == (16, 5) and torch.isfinite(few).all()
    assert len(torch.unique(few, dim=0)) == 16
    one = kmeans(x[:1], 4, generator=torch.Generator().manual_seed(3))
    assert one.shape == (4, 5) and torch.isfinite(one).all()


def test_training_with_fewer_items_than_codes():
    z, _ = clustered_data(n=5)
    model, history = fit(z, CONFIG, seed=0, **{**TRAIN, "epochs": 2})
    assert np.isfinite(history[-1]["loss"])
    assert model.encode_codes(z).shape == (5, CONFIG.levels)


def test_adagrad_runs(data):
    z, _ = data
    _, history = fit(z[:500], CONFIG, seed=0, **{**TRAIN, "epochs": 2, "optimizer": "adagrad", "lr": 0.05})
    assert np.isfinite(history[-1]["loss"])


def test_config_round_trip_and_validation():
    cfg = RQVAEConfig(in_dim=10, hidden=[8, 4], code_dim=3, levels=2, codebook_size=5, dropout=0.1)
    assert cfg.hidden == (8, 4)
    assert RQVAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    defaults = RQVAEConfig(in_dim=768)  # TIGER's defaults
    assert (defaults.hidden, defaults.levels, defaults.codebook_size, defaults.beta) == ((512, 256, 128), 3, 256, 0.25)
    assert defaults.recon_reduction == "sum"
    with pytest.raises(ValueError):
        RQVAEConfig(in_dim=10, recon_reduction="median")
    with pytest.raises(ValueError, match="unknown"):
        RQVAEConfig.from_dict({**cfg.to_dict(), "extra": 1})
    with pytest.raises(Exception):
        cfg.levels = 4  # frozen


def test_train_rejects_bad_input(data):
    z, _ = data
    with pytest.raises(ValueError, match="shape"):
        fit(z[0], CONFIG, seed=0, **TRAIN)
    with pytest.raises(ValueError, match="optimizer"):
        fit(z, CONFIG, seed=0, **{**TRAIN, "optimizer": "sgd"})
    bad = z[:20].copy()
    bad[3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(bad, CONFIG, seed=0, **TRAIN)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def test_plateau_stops_before_the_cap_and_keeps_the_fewest_collisions(data, monkeypatch):
    z, _ = data

    def restart(model, data, generator):  # a restart that moves every codebook after every epoch
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(1e-3)
        return 1
    monkeypatch.setattr("pipeline.tokenizers.rqvae_training.restart_dead_codes", restart)
    train = {**TRAIN, "epochs": 400, "dead_code_restart": True}
    model, history = fit(z, CONFIG, seed=0, patience=10, keep="collisions", **train)
    assert len(history) < 400  # stopped on the plateau, not at the cap
    best = min(history, key=lambda row: (row["collision_rate"], row["loss"]))
    assert best["epoch"] < len(history) and best["codes_restarted"]
    codes = model.encode_codes(torch.from_numpy(z)).numpy()
    assert collision_stats(codes)["collision_rate"] == best["collision_rate"]
    # the kept weights are that epoch's as its codes were measured, before its restart
    rerun, _ = fit(z, CONFIG, seed=0, **{**train, "epochs": best["epoch"]})
    assert all(torch.equal(a, b) for a, b in zip(state(model).values(), state(rerun).values()))
    # no epoch of the last `patience` improved the collision rate or the loss (by 0.1 %)
    before = history[:-10]
    best_collisions, best_loss = min(r["collision_rate"] for r in before), min(r["loss"] for r in before)
    assert all(r["collision_rate"] >= best_collisions and r["loss"] >= best_loss * (1 - 1e-3) for r in history[-10:])


def test_no_patience_runs_every_epoch_and_keeps_the_last(data, trained):
    z, _ = data
    model, history = fit(z, CONFIG, seed=0, patience=0, keep="last", **TRAIN)
    assert len(history) == TRAIN["epochs"]
    assert all(torch.equal(a, b) for a, b in zip(state(model).values(), state(trained[0]).values()))
