"""The trainer at the speed of the hardware: the device-resident batches are today's batches,
a compiled step computes the eager step's loss, and N torchrun-style processes (DDP over gloo) make the
updates of one process with the same global batch."""
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from pipeline.config import TrainConfig
from pipeline.data.splits import DeviceSplit, Split
from pipeline.models.sasrec import SASRec, SASRecConfig
from pipeline.models.tiger.model import PAD
from pipeline.training.trainer import Trainer
from tests.test_tiger import N_ITEMS, pattern_split, tiny_tiger


def ragged_split(n=90, seed=0) -> Split:
    """Histories of 1..25 items (some longer than max_history 20), so batches differ in width."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 26, n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Split(np.arange(n), offsets, rng.integers(0, N_ITEMS, offsets[-1]), rng.integers(0, N_ITEMS, n))


def without_dropout(model):
    """Dropout off everywhere (T5's attention dropout is a float on each attention module)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif isinstance(getattr(m, "dropout", None), float):
            m.dropout = 0.0
    return model


def trainer_of(model, tmp_path, split=None, **settings) -> Trainer:
    cfg = TrainConfig(**{"batch_size": 16, "lr": 1e-2, "warmup_steps": 0, "beam_size": 5, "precision": "fp32",
                         **settings})
    split = split or ragged_split()
    return Trainer(model, split, pattern_split(5), cfg, tmp_path, seed=3, device="cpu", log=lambda *_: None)


def test_device_batches_are_the_host_path_batches_for_a_fixed_seed(tmp_path):
    split = ragged_split()
    model = tiny_tiger()
    trainer = trainer_of(model, tmp_path, split, samples_per_epoch=70)
    for epoch in (0, 1):
        trainer.epoch = epoch
        # the host-batch reference path: the (seed, epoch) permutation cut into batch_size chunks
        order = np.random.default_rng([3, epoch]).permutation(len(split))[:70]
        expected = [order[i:i + 16] for i in range(0, 70, 16)]
        got = trainer.epoch_batches()
        assert [g.tolist() for g, _, _ in got] == [e.tolist() for e in expected]
        assert [size for _, size, _ in got] == [len(e) for e in expected]
        assert all(width is None for _, _, width in got)
        for idx, _, _ in got:
            host = model.make_batch(split, idx.numpy(), "cpu")
            device = model.make_batch(DeviceSplit(split, "cpu"), idx, "cpu")
            assert host.keys() == device.keys()
            for key in host:
                assert torch.equal(host[key], device[key]), key
            # static width: the same batch, padded to the full history width with masked PAD columns
            static = model.make_batch(DeviceSplit(split, "cpu", static_width=True), idx, "cpu")
            width = host["input_ids"].shape[1]
            assert static["input_ids"].shape[1] == 20 * model.config.depth + 1
            assert torch.equal(static["input_ids"][:, :width], host["input_ids"])
            assert (static["input_ids"][:, width:] == PAD).all() and (static["attention_mask"][:, width:] == 0).all()


def test_length_grouped_batches_cover_the_epoch_once_and_pad_less(tmp_path):
    split = ragged_split(n=300)
    model = tiny_tiger()
    grouped = trainer_of(model, tmp_path / "g", split, group_by_length=True)
    plain = trainer_of(model, tmp_path / "p", split)
    batches = grouped.epoch_batches()
    assert sorted(np.concatenate([b.numpy() for b, _, _ in batches]).tolist()) == list(range(300))
    assert [b.tolist() for b, _, _ in batches] == [b.tolist() for b, _, _ in grouped.epoch_batches()]  # seeded
    lengths = np.minimum(np.diff(split.offsets), 20)
    padded = {"grouped": 0, "plain": 0}
    for idx, _, width in batches:
        host = model.make_batch(split, idx.numpy(), "cpu")
        batch = model.make_batch(grouped.train_data.with_width(width), idx, "cpu")
        assert width >= lengths[idx.numpy()].max() and width % 4 == 0
        trimmed = host["input_ids"].shape[1]
        assert torch.equal(batch["input_ids"][:, :trimmed], host["input_ids"])  # the same batch, maybe wider
        assert (batch["input_ids"][:, trimmed:] == PAD).all()
        padded["grouped"] += int((lengths[idx.numpy()].max() - lengths[idx.numpy()]).sum())
    for idx, _, _ in plain.epoch_batches():
        padded["plain"] += int((lengths[idx.numpy()].max() - lengths[idx.numpy()]).sum())
    assert padded["grouped"] < padded["plain"] / 3


def test_sasrec_device_batches_are_the_host_batches():
    split = ragged_split()
    model = SASRec(SASRecConfig(n_items=N_ITEMS, max_len=20))
    idx = np.random.default_rng(0).permutation(len(split))[:32]
    host = model.make_batch(split, idx, "cpu")
    device = model.make_batch(DeviceSplit(split, "cpu"), torch.as_tensor(idx), "cpu")
    for key in host:
        assert torch.equal(host[key], device[key]), key
    model.eval()  # no dropout: a static-width batch gives the same scores as the trimmed one
    static = model.make_batch(DeviceSplit(split, "cpu", static_width=True), torch.as_tensor(idx), "cpu")
    assert static["history"].shape[1] == 20
    torch.testing.assert_close(model.scores(static), model.scores(host), rtol=1e-5, atol=1e-5)


def test_static_width_batches_give_the_trimmed_batches_loss():
    model = tiny_tiger()
    model.eval()  # dropout off: the two losses differ only by the masked padding
    split = ragged_split()
    idx = torch.arange(40)
    trimmed = model.loss(model.make_batch(DeviceSplit(split, "cpu"), idx, "cpu"))
    static = model.loss(model.make_batch(DeviceSplit(split, "cpu", static_width=True), idx, "cpu"))
    torch.testing.assert_close(static, trimmed, rtol=1e-5, atol=1e-6)


def test_compiled_step_gives_the_eager_loss_and_update(tmp_path):
    pytest.importorskip("torch._inductor")
    losses, weights = {}, {}
    for setting in (False, True):
        model = without_dropout(tiny_tiger())  # the two steps see the same function
        trainer = trainer_of(model, tmp_path / str(setting), samples_per_epoch=48, compile=setting)
        losses[setting] = trainer.train_epoch()
        assert trainer.compiled == setting  # it compiled, it did not fall back
        weights[setting] = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert losses[True] == pytest.approx(losses[False], rel=1e-3)  # well inside bf16 noise (~1e-2)
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-3, atol=1e-4)


def test_a_compiler_failure_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    messages = []
    model = tiny_tiger()
    trainer = trainer_of(model, tmp_path, samples_per_epoch=32, compile=True)

    def broken(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")
    trainer.step_fn = broken
    trainer.log = messages.append
    loss = trainer.train_epoch()
    assert np.isfinite(loss) and not trainer.compiled
    assert any("torch.compile failed" in m and "no C++ compiler" in m for m in messages)


# ----- more than one process ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    try:
        params = _train_two_epochs(out_dir)
        if rank == 0:
            torch.save(params, os.path.join(out_dir, "ddp.pt"))
    finally:
        torch.distributed.destroy_process_group()


def _train_two_epochs(out_dir: str) -> torch.Tensor:
    model = without_dropout(tiny_tiger())  # one process and two see the same function
    # 90 samples in batches of 13: each splits 7 + 6 (the shares must be weighted), the last (12) 6 + 6
    trainer = trainer_of(model, out_dir, batch_size=13, epochs=2, eval_every=5)
    trainer.train_epoch()
    trainer.epoch += 1
    trainer.train_epoch()
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_two_ddp_processes_make_the_updates_of_one_process_with_the_same_batch(tmp_path):
    single = _train_two_epochs(str(tmp_path / "single"))
    (tmp_path / "ddp").mkdir()
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp" / "ddp.pt")
    before = torch.cat([p.detach().flatten() for p in tiny_tiger().parameters()])
    assert not torch.allclose(single, before)  # it trained
    # the same parameters after 12 steps, up to float summation order (padding differs per process)
    torch.testing.assert_close(ddp, single, rtol=1e-4, atol=1e-5)

