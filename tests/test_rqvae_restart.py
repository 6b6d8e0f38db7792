"""Dead-code restarts keep the RQ-VAE's codebooks in use (the collapse they prevent is measured in
params.yaml's comment)."""
import numpy as np
import torch

from pipeline.tokenizers.rqvae import RQVAE, RQVAEConfig
from pipeline.tokenizers.rqvae_training import restart_dead_codes
from tests.test_rqvae import fit


def test_unused_codes_move_onto_item_residuals_and_used_codes_stay():
    torch.manual_seed(0)
    model = RQVAE(RQVAEConfig(in_dim=8, hidden=(16,), code_dim=4, levels=2, codebook_size=6))
    data = torch.randn(50, 8)
    with torch.no_grad():
        model.codebooks[0].fill_(100.0)  # far from everything ...
        model.codebooks[0, 2] = model.encoder(data).mean(0)  # ... except code 2, which takes every item
    before = model.codebooks.detach().clone()
    moved = restart_dead_codes(model, data, torch.Generator().manual_seed(0))
    codes = model.encode_codes(data)
    assert moved >= 5  # the five dead codes of level 1 (and any dead ones of level 2)
    assert torch.equal(model.codebooks[0, 2], before[0, 2])
    assert len(torch.unique(codes[:, 0])) > 1


def test_restarts_turn_a_collapsing_run_into_a_used_codebook():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=32)
    z = (centre + 0.05 * rng.normal(size=(300, 32))).astype(np.float32)  # a tight, homogeneous catalogue
    config = RQVAEConfig(in_dim=32, hidden=(64,), code_dim=8, levels=2, codebook_size=16)
    kwargs = dict(epochs=20, batch_size=100, lr=1e-3, seed=0, progress=False)
    _, plain = fit(z, config, **kwargs)
    _, restarted = fit(z, config, dead_code_restart=True, **kwargs)
    # measured: plain ends with 1 level-1 code of 16 and every item colliding; restarted uses 7
    assert plain[-1]["util_l1"] <= 2 / 16 and restarted[-1]["util_l1"] >= 4 / 16
    assert restarted[-1]["collision_rate"] < plain[-1]["collision_rate"]
