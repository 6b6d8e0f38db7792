"""Early stopping (the references' schedule): training stops `patience` validations after the best one, and the
weights it keeps, and the test ranking reads, are the best validation epoch's."""
from __future__ import annotations

import torch
from safetensors.torch import load_file

from pipeline.config import TrainConfig
from pipeline.training.trainer import Trainer
from tests.test_tiger import pattern_split, tiny_tiger

# validation NDCG@10 per epoch, scripted: the best is epoch 3; epochs 4 and 5 do not beat it
SCRIPT = [0.10, 0.20, 0.30, 0.25, 0.29, 0.50, 0.60]


def test_stops_after_patience_and_keeps_the_best_epochs_weights(tmp_path, monkeypatch):
    scores = iter(SCRIPT)
    monkeypatch.setattr(Trainer, "validate", lambda self: {"ndcg@10": next(scores)})
    weights = {}

    def snapshot(epoch, row):
        weights[epoch] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    model = tiny_tiger()
    cfg = TrainConfig(epochs=7, batch_size=32, lr=1e-2, weight_decay=0.0, warmup_steps=2, eval_every=1,
                      patience=2, beam_size=10, precision="fp32")
    summary = Trainer(model, pattern_split(), pattern_split(), cfg, tmp_path, seed=0, device="cpu",
                      log=lambda *_: None, on_epoch=snapshot).fit()
    assert summary["epochs_run"] == 5 and summary["best_epoch"] == 3 and summary["best_valid_ndcg@10"] == 0.30
    best = load_file(str(tmp_path / "best.safetensors"))
    assert all(torch.equal(best[k], weights[3][k]) for k in best)
    assert not all(torch.equal(best[k], weights[5][k]) for k in best)  # training went on after it
