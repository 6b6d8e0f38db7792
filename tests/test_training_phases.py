"""Training phases in the one trainer: each phase trains only its parameters with its loss, phases repeat
in order, the model acts between epochs; a model without phases trains as one phase."""
import numpy as np
import pytest
import torch
from torch import nn

from pipeline.config import TrainConfig
from pipeline.models.base import Phase, Recommender, Restart
from pipeline.training.trainer import Trainer
from tests.test_tiger import pattern_split


class TwoPart(Recommender):
    """Item scores = a(last item) + b(last item); phase "a" trains ``a`` with ``loss``, phase "b" ``b`` with
    ``loss_b`` (the same loss: ETEGRec's tokenizer and recommender losses differ, here only the parts do)."""

    def __init__(self, n_items: int = 40):
        super().__init__()
        self.a, self.b = nn.Embedding(n_items, n_items), nn.Embedding(n_items, n_items)
        self.calls: list[tuple[str, str, int]] = []
        self.ends: list[tuple[int, str]] = []

    def phases(self, epochs):
        return [Phase("a", 2, "loss", lambda name: name.startswith("a.")),
                Phase("b", 1, "loss_b", lambda name: name.startswith("b."))]

    def end_of_epoch(self, epoch, phase):
        self.ends.append((epoch, phase.name))

    def make_batch(self, split, idx, device):
        last = split.values[split.offsets[idx + 1] - 1]
        return {"last": torch.as_tensor(last), "target": torch.as_tensor(split.targets[idx])}

    def scores(self, batch):
        return self.a(batch["last"]) + self.b(batch["last"])

    def loss(self, batch):
        self.calls.append(("loss", "a", 0))
        return nn.functional.cross_entropy(self.scores(batch), batch["target"])

    def loss_b(self, batch):
        self.calls.append(("loss_b", "b", 0))
        return nn.functional.cross_entropy(self.scores(batch), batch["target"])

    def rank(self, batch, k):
        return self.scores(batch).topk(k, dim=1).indices


def two_part_trainer(tmp_path, **settings) -> tuple[TwoPart, Trainer]:
    torch.manual_seed(0)
    model = TwoPart()
    cfg = TrainConfig(batch_size=64, lr=0.05, warmup_steps=0, eval_every=1, beam_size=10, **settings)
    return model, Trainer(model, pattern_split(20), pattern_split(5, start=5), cfg, tmp_path, seed=0, device="cpu",
                          log=lambda *_: None)


def test_each_phase_trains_only_its_parameters_with_its_loss_and_phases_repeat(tmp_path):
    model, trainer = two_part_trainer(tmp_path, epochs=5, weight_decay=0.1)
    assert [trainer.phase_at(e).name for e in range(6)] == ["a", "a", "b", "a", "a", "b"]
    snapshots = []
    for epoch in range(3):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.calls.clear()
        trainer.train_epoch()
        trainer.epoch += 1
        changed = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
        snapshots.append((changed, {c[0] for c in model.calls}))
    # weight decay included: a parameter outside the phase is not touched at all
    assert snapshots == [({"a"}, {"loss"}), ({"a"}, {"loss"}), ({"b"}, {"loss_b"})]
    assert all(p.requires_grad for p in model.parameters())  # restored after each epoch


def test_fit_runs_the_phases_calls_the_hook_and_records_the_phase(tmp_path):
    model, trainer = two_part_trainer(tmp_path, epochs=4, patience=10)
    trainer.fit()
    assert model.ends == [(1, "a"), (2, "a"), (3, "b"), (4, "a")]
    assert [row["phase"] for row in trainer.history] == ["a", "a", "b", "a"]
    assert np.isfinite([row["train_loss"] for row in trainer.history]).all()


def test_a_model_without_phases_trains_as_one_phase_of_every_parameter(tmp_path):
    from tests.test_tiger import tiny_tiger

    model = tiny_tiger()
    cfg = TrainConfig(epochs=2, batch_size=16, warmup_steps=1, eval_every=1, beam_size=10)
    trainer = Trainer(model, pattern_split(10), pattern_split(5, start=5), cfg, tmp_path, seed=0, device="cpu",
                      log=lambda *_: None)
    assert [(p.name, p.epochs, p.loss, p.trains) for p in trainer.phases] == [("train", 2, "loss", None)]
    trainer.fit()
    assert "phase" not in trainer.history[0]


class WithFinetune(TwoPart):
    """Two epochs of phase "a", then a restarting phase "ft" (ETEGRec's fine-tuning) on ``b`` to the end."""

    def phases(self, epochs):
        return [Phase("a", 2, "loss", lambda name: name.startswith("a.")),
                Phase("ft", epochs - 2, "loss_b", lambda name: name.startswith("b."),
                      restart=Restart(lr=0.01, weight_decay=0.0, warmup_steps=0))]


def finetune_trainer(tmp_path, **settings) -> tuple[WithFinetune, Trainer]:
    torch.manual_seed(0)
    model = WithFinetune()
    cfg = TrainConfig(batch_size=64, lr=0.05, warmup_steps=0, eval_every=1, beam_size=10, patience=10, **settings)
    return model, Trainer(model, pattern_split(20), pattern_split(5, start=5), cfg, tmp_path, seed=0, device="cpu",
                          log=lambda *_: None)


def test_a_restarting_phase_starts_a_fresh_optimizer_from_the_best_weights_and_is_not_repeated(tmp_path):
    from safetensors.torch import load_file

    model, trainer = finetune_trainer(tmp_path, epochs=5)
    assert [trainer.phase_at(e).name for e in range(5)] == ["a", "a", "ft", "ft", "ft"]
    first_optimizer = trainer.optimizer
    seen = {}
    original = trainer.begin_restart

    def spy(phase, best_path):
        seen["best_a"] = load_file(str(best_path))["a.weight"].clone()
        with torch.no_grad():
            model.a.weight.add_(1.0)  # the current weights are not the best ones
        original(phase, best_path)
        seen["a_after_restart"] = model.a.weight.detach().clone()
        seen["state"] = dict(trainer.optimizer.state)

    trainer.begin_restart = spy
    trainer.fit()
    assert trainer.optimizer is not first_optimizer and seen["state"] == {}  # no Adam moments carried over
    assert trainer.restarted_at == 2
    assert torch.equal(seen["a_after_restart"], seen["best_a"])  # from the best validated weights
    assert torch.equal(model.a.weight.detach(), seen["best_a"])  # the restarted phase trains only b
    # the fresh schedule: its own learning rate, no warm-up, cosine over the 3 epochs left (1 step per epoch)
    lrs = [row["lr"] for row in trainer.history]
    assert lrs[2] < 0.01 and lrs[2] > lrs[3] > lrs[4] and lrs[4] == 0.0
    assert [row["phase"] for row in trainer.history] == ["a", "a", "ft", "ft", "ft"]
    assert trainer.best_epoch >= 3  # a fresh best score: the fine-tuned weights are the ones kept


def test_a_run_interrupted_in_the_restarted_phase_resumes_to_the_same_weights(tmp_path):
    model, trainer = finetune_trainer(tmp_path / "full", epochs=5)
    trainer.fit()
    full = {k: v.clone() for k, v in model.state_dict().items()}

    _, first = finetune_trainer(tmp_path / "cut", epochs=5)
    save_last = first.save_last

    def killed_after_epoch_4():  # the process dies once the restarted phase's second epoch is checkpointed
        save_last()
        if first.epoch == 4:
            raise KeyboardInterrupt

    first.save_last = killed_after_epoch_4
    with pytest.raises(KeyboardInterrupt):
        first.fit()
    again, resumed = finetune_trainer(tmp_path / "cut", epochs=5)
    resumed.fit()
    assert resumed.restarted_at == 2
    assert all(torch.equal(full[k], v) for k, v in again.state_dict().items())
    assert [row["lr"] for row in resumed.history] == [row["lr"] for row in trainer.history]
