"""Alignment losses (pipeline.models.etegrec.alignment): ETEGRec's SIA and PSA terms, LETTER's collaborative
regulariser."""
import math

import pytest
import torch

from pipeline.models.etegrec.alignment import code_logits, symmetric_info_nce, symmetric_kl


def test_the_kl_term_is_zero_for_identical_inputs_symmetric_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(5, 3, 8, generator=g), torch.randn(5, 3, 8, generator=g)
    assert symmetric_kl(p, p).abs() < 1e-6
    assert symmetric_kl(p, p + 4.0).abs() < 1e-5  # logits, not probabilities: a shift changes nothing
    torch.testing.assert_close(symmetric_kl(p, q), symmetric_kl(q, p))
    assert symmetric_kl(p, q) > 0.1
    # against hand computation for one level of two codes: P = (1/2, 1/2), Q = (e/(1+e), 1/(1+e))
    one_p, one_q = torch.tensor([[[0.0, 0.0]]]), torch.tensor([[[1.0, 0.0]]])
    qa = math.e / (1 + math.e)
    expected = 0.5 * math.log(0.5 / qa) + 0.5 * math.log(0.5 / (1 - qa)) \
        + qa * math.log(qa / 0.5) + (1 - qa) * math.log((1 - qa) / 0.5)
    assert symmetric_kl(one_p, one_q).item() == pytest.approx(expected, rel=1e-5)


def test_code_logits_make_the_nearest_code_likeliest_under_the_papers_sign():
    codebooks = torch.tensor([[[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]]])  # one level, three codes
    v = torch.tensor([[[2.5, 0.2]]])
    assert code_logits(v, codebooks).argmax(-1).item() == 1
    assert code_logits(v, codebooks, sign=+1.0).argmax(-1).item() == 2  # the official code's reading: farthest
    torch.testing.assert_close(code_logits(v, codebooks)[0, 0, 0], torch.tensor(-(2.5 ** 2 + 0.2 ** 2)))
    # every level, every code: the squared distance, as the broadcast difference computes it
    g = torch.Generator().manual_seed(2)
    residuals, books = torch.randn(7, 3, 16, generator=g), torch.randn(3, 5, 16, generator=g)
    direct = (residuals[:, :, None, :] - books[None]).pow(2).sum(-1)
    torch.testing.assert_close(code_logits(residuals, books), -direct, rtol=1e-5, atol=1e-4)


def test_info_nce_ranks_the_matching_pair_first_and_is_lowest_when_pairs_match():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(6, 16, generator=g)
    b = a + 0.1 * torch.randn(6, 16, generator=g)  # row i of b is a noisy copy of row i of a
    sim = torch.nn.functional.normalize(a, dim=-1) @ torch.nn.functional.normalize(b, dim=-1).T
    assert torch.equal(sim.argmax(1), torch.arange(6))
    matched = symmetric_info_nce(a, b, temperature=0.1)
    shuffled = symmetric_info_nce(a, b[torch.tensor([1, 2, 3, 4, 5, 0])], temperature=0.1)
    assert matched < 0.05 < shuffled
    with pytest.raises(ValueError, match="temperature"):
        symmetric_info_nce(a, b, temperature=0.0)


def test_rows_with_the_same_target_are_not_each_others_negatives():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # rows 0 and 1: the same target item
    b = a.clone()
    ids = torch.tensor([7, 7, 9])
    # with the duplicate masked, rows 0 and 1 each have one negative, the orthogonal row (cos 0): loss
    # log(1 + e^(-1/t)); row 2 has two (rows 0 and 1): log(1 + 2 e^(-1/t)); the same in both directions
    t = 0.5
    expected = (2 * math.log1p(math.exp(-1 / t)) + math.log1p(2 * math.exp(-1 / t))) / 3
    assert symmetric_info_nce(a, b, t, ids).item() == pytest.approx(expected, rel=1e-5)
    # unmasked, rows 0 and 1 count each other (cos 1) as a negative: log(1 + e^0 + e^(-1/t))
    unmasked = (2 * math.log(1 + 1 + math.exp(-1 / t)) + math.log1p(2 * math.exp(-1 / t))) / 3
    assert symmetric_info_nce(a, b, t).item() == pytest.approx(unmasked, rel=1e-5)


def test_the_official_reductions_equal_the_official_formulas_on_a_fixed_tensor():
    """loss_reductions: official (ETEGRec): KL by F.kl_div(batchmean) over batch x levels, both directions summed;
    PSA's two InfoNCE directions summed; L_SQ as mean squared errors, the levels' terms averaged."""
    import torch.nn.functional as F

    from pipeline.models.etegrec.model import official_sq_loss
    from pipeline.tokenizers.rqvae import RQVAE, RQVAEConfig

    g = torch.Generator().manual_seed(3)
    p, q = torch.randn(6, 3, 8, generator=g), torch.randn(6, 3, 8, generator=g)
    lp, lq = F.log_softmax(p.reshape(-1, 8), -1), F.log_softmax(q.reshape(-1, 8), -1)
    kl = F.kl_div(lp, lq, reduction="batchmean", log_target=True) + F.kl_div(lq, lp, reduction="batchmean",
                                                                               log_target=True)
    torch.testing.assert_close(symmetric_kl(p, q, levels="mean"), kl)
    torch.testing.assert_close(symmetric_kl(p, q, levels="sum"), 3 * kl)  # the paper's sum over the 3 levels

    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.07
    target = torch.arange(6)
    nce = F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)
    torch.testing.assert_close(symmetric_info_nce(a, b, 0.07, directions="sum"), nce)
    torch.testing.assert_close(symmetric_info_nce(a, b, 0.07), nce / 2)

    torch.manual_seed(0)
    config = RQVAEConfig(in_dim=6, hidden=[5], code_dim=4, levels=3, codebook_size=8, beta=0.25)
    model = RQVAE(config)
    x = torch.randn(10, 6, generator=g)
    out = model(x)
    residual, levels = model.encoder(x), []
    for level in range(3):
        book = model.codebooks[level]
        quantised = book[torch.cdist(residual, book).argmin(1)]
        levels.append(F.mse_loss(quantised, residual.detach()) + 0.25 * F.mse_loss(quantised.detach(), residual))
        residual = residual - quantised
    expected = F.mse_loss(model.decoder(out["r_hat"]), x) + torch.stack(levels).mean()
    torch.testing.assert_close(official_sq_loss(out, x, config), expected)
