"""LETTER's tokenizer (pipeline/tokenizers/letter.py on pipeline/tokenizers/rqvae.py): the switch that reduces it to the
RQ-VAE, its two regularisers, the Sinkhorn-balanced last level, and the neighbour-agreement figure it logs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from pipeline.config import LetterTokenizer, RQVAETokenizer
from pipeline.tokenizers.letter import LetterRegulariser, cluster_codes, diversity_loss, neighbour_code_agreement
from pipeline.tokenizers.rqvae import sinkhorn_codes
from pipeline.tokenizers.semantic_ids import read_id_table
from pipeline.tokenizers.tokenize import semantic_ids, tokenize
from tests.test_rqvae import CONFIG, clustered_data, fit

SMALL = dict(hidden=[64], code_dim=16, levels=3, codebook_size=32, epochs=20, batch_size=256, lr=3e-3)


def letter(collaborative=0.0, diversity=0.0, sinkhorn=False, **kw):
    z, labels = clustered_data(n=600)
    h = (np.eye(4)[np.arange(len(z)) % 4] + 0.01 * np.random.default_rng(1).normal(size=(len(z), 4))).astype(np.float32)
    reg = LetterRegulariser(h.astype(np.float32), CONFIG.code_dim, collaborative_weight=collaborative,
                            diversity_weight=diversity, clusters=3, refresh_epochs=1,
                            sinkhorn_epsilon=0.003 if sinkhorn else 0.0, sinkhorn_iters=50, seed=0)
    return z, h, reg


def test_letter_block_with_regularisers_off_gives_the_rqvaes_ids(tmp_path):
    z, _ = clustered_data(n=600)
    np.save(tmp_path / "text.npy", z)
    save_file({"item_embeddings": torch.randn(len(z), 5)}, str(tmp_path / "cf.safetensors"))
    inputs = [str(tmp_path / "text.npy"), str(tmp_path / "cf.safetensors")]
    blocks = {"rqvae": RQVAETokenizer(inputs=inputs[:1], **SMALL),
              "letter": LetterTokenizer(inputs=inputs, collaborative_weight=0, diversity_weight=0, sinkhorn=False,
                                        **SMALL),
              "letter_on": LetterTokenizer(inputs=inputs, **SMALL)}
    ids = {}
    for name, block in blocks.items():
        tokenize(block, 0, tmp_path / f"tok_{name}", tmp_path / f"{name}.csv", log=lambda *_: None)
        semantic_ids(block, tmp_path / f"tok_{name}", tmp_path / f"ids_{name}", log=lambda *_: None)
        ids[name] = read_id_table(tmp_path / f"ids_{name}" / "ids.parquet")
    assert np.array_equal(ids["letter"], ids["rqvae"])
    assert ((tmp_path / "tok_letter" / "model.safetensors").read_bytes()
            == (tmp_path / "tok_rqvae" / "model.safetensors").read_bytes())
    assert not np.array_equal(ids["letter_on"], ids["rqvae"])  # the regularisers do act


def test_a_regulariser_with_zero_weights_trains_the_rqvae_step_for_step():
    z, _, reg = letter()
    train = dict(epochs=5, batch_size=128, lr=1e-2, seed=0, progress=False)
    plain, _ = fit(z, CONFIG, **train)
    hooked, history = fit(z, CONFIG, regulariser=reg, **train)
    for name, value in plain.state_dict().items():
        assert torch.equal(value, hooked.state_dict()[name]), name
    assert "collaborative_loss" not in history[-1]


def test_collaborative_term_is_in_batch_cross_entropy_and_trains_the_encoder_only():
    z, h, reg = letter(collaborative=1.0)
    from pipeline.tokenizers.rqvae import RQVAE

    torch.manual_seed(0)
    model = RQVAE(CONFIG)
    model.init_codebooks(torch.from_numpy(z[:256]), generator=torch.Generator().manual_seed(0))
    reg.parameters("cpu")
    rows = torch.arange(32)
    out = model(torch.from_numpy(z[:32]))
    term = reg.losses(model, out, rows, epoch=1)["collaborative_loss"]
    logits = out["r_hat"].detach() @ reg.projection(torch.from_numpy(h[:32])).T
    assert torch.allclose(term, F.cross_entropy(logits, rows), atol=1e-5)
    term.backward()
    assert model.codebooks.grad is None or model.codebooks.grad.abs().sum() == 0  # straight-through: not the codes
    assert model.encoder[0].weight.grad.abs().sum() > 0
    assert reg.projection.weight.grad.abs().sum() > 0


def test_collaborative_regulariser_puts_collaborative_neighbours_on_shared_codes():
    """Text vectors without structure, collaborative vectors in 4 groups: the collaborative term moves the first
    level toward the groups (without it, a neighbour shares the first code about as often as chance)."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(800, CONFIG.in_dim)).astype(np.float32)
    groups = rng.integers(0, 4, len(z))
    h = (np.eye(4)[groups] * 3 + 0.05 * rng.normal(size=(len(z), 4))).astype(np.float32)
    train = dict(epochs=40, batch_size=256, lr=3e-3, seed=0, progress=False)
    shares = {}
    for weight in (0.0, 100.0):  # the reconstruction of 32-d noise dominates a small weight
        reg = LetterRegulariser(h, CONFIG.code_dim, collaborative_weight=weight, diversity_weight=0, clusters=3,
                                refresh_epochs=1, sinkhorn_epsilon=0.0, sinkhorn_iters=50, seed=0)
        model, _ = fit(z, CONFIG, regulariser=reg, **train)
        shares[weight] = neighbour_code_agreement(model.encode_codes(z).numpy(), h, k=10)
    assert shares[100.0]["share"] > shares[0.0]["share"] + 0.05, shares


def test_diversity_targets_another_code_of_the_same_cluster():
    torch.manual_seed(0)
    books = torch.randn(2, 8, 4, requires_grad=True)
    clusters = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2], [0, 1, 0, 1, 0, 1, 0, 1]])
    codes = torch.tensor([[0, 1], [3, 2], [7, 5], [4, 6]])
    g = torch.Generator().manual_seed(0)
    loss = diversity_loss(books, codes, clusters, g)
    # by hand, with the same draws: level 0 row 2 (code 7) is alone in its cluster and adds nothing
    g = torch.Generator().manual_seed(0)
    expected = 0.0
    for level in range(2):
        c = codes[:, level]
        same = (clusters[level][c][:, None] == clusters[level][None, :]) & ~F.one_hot(c, 8).bool()
        noise = torch.rand(same.shape, generator=g)
        positive = noise.masked_fill(~same, -1).argmax(1)
        for row in range(4):
            if not same[row].any():
                continue
            assert clusters[level][positive[row]] == clusters[level][c[row]] and positive[row] != c[row]
        has = same.any(1)
        logits = (books[level][c] @ books[level].T).masked_fill(F.one_hot(c, 8).bool(), float("-inf"))
        expected = expected + F.cross_entropy(logits[has], positive[has])
    assert torch.allclose(loss, expected / 2)
    loss.backward()
    assert books.grad.abs().sum() > 0


def test_codes_are_clustered_per_level():
    books = torch.stack([torch.cat([torch.zeros(4, 2), torch.full((4, 2), 10.0)]) + 0.01 * torch.randn(8, 2)] * 3)
    labels = cluster_codes(books, 2, torch.Generator().manual_seed(0))
    assert labels.shape == (3, 8)
    for level in labels:
        assert len(set(level[:4].tolist())) == 1 and len(set(level[4:].tolist())) == 1 and level[0] != level[4]


def test_sinkhorn_spreads_a_batch_that_the_nearest_code_piles_on_one_code():
    torch.manual_seed(0)
    points = torch.randn(64, 2) * 0.1
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    dists = torch.cdist(points, codes) ** 2
    assert (dists.argmin(1) == 0).all()
    balanced = sinkhorn_codes(dists, 0.003, 50)
    counts = torch.bincount(balanced, minlength=4)
    assert (counts > 0).all() and counts.max() <= 40, counts  # 16 each when perfectly balanced
    separated = torch.cat([codes + 0.01 * torch.randn(4, 2) for _ in range(8)])
    d = torch.cdist(separated, codes) ** 2
    assert torch.equal(sinkhorn_codes(d, 0.003, 50), d.argmin(1))  # balanced already: the nearest codes


def test_neighbour_agreement_by_hand():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    codes = np.array([[0, 5], [0, 6], [1, 5], [0, 5]])
    out = neighbour_code_agreement(codes, vectors, k=1)
    # nearest neighbours: 0<->1, 2<->3; first codes agree for 0, 1 only
    assert out["share"] == pytest.approx(0.5)
    assert out["chance"] == pytest.approx(0.75 ** 2 + 0.25 ** 2)
    assert neighbour_code_agreement(codes, vectors, k=1, levels=2)["share"] == pytest.approx(0.0)


def test_letter_block_needs_the_collaborative_vectors_of_the_same_items(tmp_path):
    z, _ = clustered_data(n=100)
    np.save(tmp_path / "text.npy", z)
    save_file({"item_embeddings": torch.randn(99, 5)}, str(tmp_path / "cf.safetensors"))
    block = LetterTokenizer(inputs=[str(tmp_path / "text.npy"), str(tmp_path / "cf.safetensors")], **SMALL)
    with pytest.raises(ValueError, match="cf.safetensors: 99 collaborative vectors for the 100 items"):
        tokenize(block, 0, tmp_path / "tok", tmp_path / "c.csv", log=lambda *_: None)
    with pytest.raises(Exception, match="at least 2"):
        LetterTokenizer(inputs=[str(tmp_path / "text.npy")])
