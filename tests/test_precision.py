"""precision: auto is bf16 where bfloat16 is native (CUDA, CPUs with AVX512-BF16/AMX) and float32 elsewhere;
an explicit bf16 on a CPU that would emulate it is refused unless forced; the precision used is recorded."""
import json

import numpy as np
import pytest
import torch

from pipeline import paths
from pipeline.config import TrainConfig
from pipeline.evaluation.evaluate import evaluate_model
from pipeline.runtime.precision import FORCE_ENV, PrecisionError, autocast, resolve_precision
from pipeline.training.method import train_method
from pipeline.training.trainer import Trainer
from tests.conftest import TINY_T5, TINY_TRAIN
from tests.test_tiger import pattern_split, tiny_tiger

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a torch.device needs no GPU to exist


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Mock PyTorch's CPU probes: ``cpu_bf16(avx512_bf16, amx)``."""
    monkeypatch.delenv(FORCE_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)

    def set_probes(avx512_bf16: bool, amx: bool = False) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    return set_probes


@pytest.mark.parametrize("avx512_bf16, amx, device, expected", [
    (False, False, CPU, "fp32"),   # emulated bf16 would be x0.1 of float32: auto keeps float32
    (True, False, CPU, "bf16"),
    (False, True, CPU, "bf16"),
    (False, False, CUDA, "bf16"),  # CUDA: bf16 autocast whatever the host CPU
])
def test_auto_is_bf16_exactly_where_it_is_native(cpu_bf16, avx512_bf16, amx, device, expected):
    cpu_bf16(avx512_bf16, amx)
    assert resolve_precision(device, "auto") == expected
    assert resolve_precision(device, "fp32") == "fp32"


def test_onednn_capped_below_bf16_counts_as_not_native(cpu_bf16, monkeypatch):
    cpu_bf16(True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert resolve_precision(CPU, "auto") == "fp32"


def test_explicit_bf16_on_a_cpu_that_would_emulate_it_stops_unless_forced(cpu_bf16, monkeypatch):
    cpu_bf16(False)
    with pytest.raises(PrecisionError, match=r"train\.precision: bf16.*AVX512-BF16.*auto.*GENREC_FORCE_BF16=1"):
        resolve_precision(CPU, "bf16", "train.precision")
    assert resolve_precision(CUDA, "bf16") == "bf16"
    monkeypatch.setenv(FORCE_ENV, "1")
    assert resolve_precision(CPU, "bf16") == "bf16"
    with autocast(CPU, "bf16"):
        assert torch.nn.Linear(4, 4)(torch.randn(2, 4)).dtype == torch.bfloat16


def test_autocast_follows_the_resolution(cpu_bf16):
    layer, x = torch.nn.Linear(4, 4), torch.randn(2, 4)
    cpu_bf16(False)
    with autocast(CPU, "auto"):
        assert layer(x).dtype == torch.float32
    cpu_bf16(True)
    with autocast(CPU, "auto"):
        assert layer(x).dtype == torch.bfloat16


def test_the_trainer_refuses_emulated_bf16_before_any_work(cpu_bf16, tmp_path):
    cpu_bf16(False)
    cfg = TrainConfig(epochs=1, batch_size=16, warmup_steps=1, beam_size=10, precision="bf16")
    with pytest.raises(PrecisionError, match="train.precision"):
        Trainer(tiny_tiger(), pattern_split(20), pattern_split(5, start=5), cfg, tmp_path, seed=0, device="cpu",
                log=lambda *_: None)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("native", [False, True])
def test_the_precision_used_is_recorded_by_training_and_evaluation(workspace, cpu_bf16, native):
    cpu_bf16(native)
    expected = "bf16" if native else "fp32"
    workspace.write_ids("rq", workspace.random_ids(), 8)
    params = workspace.params({"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"],
                                         "backbone": TINY_T5, "train": {**TINY_TRAIN, "epochs": 1}}})
    summary, history = train_method(params, "tiger", paths.model_dir("tiger"), log=lambda *_: None)
    assert summary["precision"] == expected and summary["device"] == "cpu"
    assert np.isfinite(history[-1]["train_loss"]) and history[-1]["valid_invalid@10"] == 0.0
    training = json.loads((paths.model_dir("tiger") / "training.json").read_text())
    assert training["precision"] == expected
    result = evaluate_model(paths.model_dir("tiger"), paths.results_dir("tiger"), params.evaluate,
                            log=lambda *_: None)
    assert result["precision"] == expected and result["invalid@10"] == 0.0
