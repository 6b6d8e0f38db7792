"""A device that fails mid-epoch (docs/operations.md, "When things fail"): out of GPU memory, a CUDA device lost, no
CUDA-capable device any more. Made on a CPU by the model's forward raising PyTorch's own exception at epoch 3, step 5
(tests/failure_cases.py, shared with scripts/failure_census.py): the stage exits 1 with a one-line message naming the
epoch, the step and the key to change, the checkpoint of epoch 2 is kept, and the re-run resumes from it and ends
with the bytes of an uninterrupted run."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest
import torch

from pipeline.orchestration.flows import run_stage
from pipeline.runtime.device_failures import kind_of
from pipeline.training.trainer import Trainer
from tests import failure_cases
from tests.bad_input_cases import in_process


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    clean = tmp_path_factory.mktemp("device") / "clean"
    return clean, failure_cases.prepare(clean)


@pytest.mark.parametrize("name", list(failure_cases.device_errors()))
def test_a_device_failure_mid_epoch_keeps_the_last_epoch_and_the_rerun_resumes_to_the_same_bytes(prepared, tmp_path,
                                                                                                 name):
    clean, expected = prepared
    work = tmp_path / "work"
    shutil.copytree(clean, work)
    verdict = failure_cases.device_case(work, name, expected)
    assert verdict.ok, verdict


def test_through_prefect_the_failed_epoch_is_a_failed_task_and_the_message_is_printed_once(prepared, tmp_path):
    from pipeline.orchestration.flows import prefect_server
    from tests.bad_input_cases import stage_env

    clean, _ = prepared
    work = tmp_path / "work"
    shutil.copytree(clean, work)
    home = tmp_path / "prefect"
    with prefect_server(stage_env(PREFECT_HOME=str(home))) as api:
        verdict = failure_cases.device_case_under_prefect(work, api, home)
    assert verdict.ok, verdict


def test_out_of_memory_in_the_validation_names_the_evaluation_batch_size(prepared, tmp_path, monkeypatch):
    clean, expected = prepared
    work = tmp_path / "work"
    shutil.copytree(clean, work)
    failure_cases.remove_outputs(work)
    validate, calls = Trainer.validate, []

    def validate_until_the_third(self):
        calls.append(self.epoch)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")
        return validate(self)

    monkeypatch.setattr(Trainer, "validate", validate_until_the_third)
    failed = in_process(work, *failure_cases.TRAIN)
    monkeypatch.setattr(Trainer, "validate", validate)
    message = failure_cases.stage_line(failed.stderr)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert ("error: out of memory on cpu in the validation after epoch 3 at methods.sasrec.train.eval_batch_size 64 "
            "(CUDA out of memory. Tried to allocate 512.00 MiB.). Nothing is lost: the checkpoint of epoch 2"
            ) in message
    again = in_process(work, *failure_cases.TRAIN)
    assert "resumed after epoch 2" in again.stdout and failure_cases.digest(work) == expected


@pytest.mark.parametrize("stage, error, said", [
    ("evaluate@tiger", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has a total "
                                              "capacity of 15.77 GiB of which 1.02 GiB is free."),
     "out of memory (tried to allocate 8.00 GiB; 1.02 GiB of 15.77 GiB free). Nothing partial was written: "
     "lower evaluate.batch_size in params.yaml"),
    ("embed", RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                           "to allocate 17179869184 bytes."), "lower embed.batch_size in params.yaml"),
    ("tokenize@rq", RuntimeError("CUDA error: device-side assert triggered"),
     "the device failed (CUDA error: device-side assert triggered): this process cannot use it any more"),
])
def test_any_other_stage_meeting_a_device_failure_says_so_in_one_line(capsys, stage, error, said):
    def body():
        raise error

    with pytest.raises(SystemExit) as info:
        run_stage(stage, body)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert f"[{stage}] error: " in err and said in err and "Traceback" not in err, err


def test_a_bug_is_no_device_failure_and_keeps_its_traceback():
    assert kind_of(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 16x2)")) is None
    assert kind_of(ValueError("CUDA error")) is None  # only RuntimeErrors, as PyTorch raises them
    def body():
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        run_stage("train@x", body)


def test_a_device_failure_in_a_compiled_step_is_not_taken_for_a_compiler_failure():
    oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")
    logged = []

    def step(*args):
        raise oom

    trainer = SimpleNamespace(_step=step, step_fn="compiled", net="eager", compiled=True, cuda_graphs=True,
                              log=logged.append)
    with pytest.raises(torch.OutOfMemoryError):
        Trainer._compiled_or_eager_step(trainer, None, None, "loss", 1.0)
    assert trainer.step_fn == "compiled" and logged == []  # not "training eagerly" with the same batch


def test_the_prefect_tasks_are_built_once_per_fit(monkeypatch, tmp_path):
    """Trainer.fit wraps the epoch and the validation as tasks once, each run named when it starts."""
    from pipeline.training import trainer as trainer_module

    made, names = [], []

    def as_task(fn, **options):
        made.append(options["name"])
        return lambda *a: (names.append(options["task_run_name"]()), fn(*a))[1]

    monkeypatch.setattr(trainer_module, "as_task", as_task)
    work = tmp_path / "work"
    failure_cases.prepare_sequences(work)
    import yaml

    (work / "params.yaml").write_text(yaml.safe_dump(failure_cases.PARAMS))
    result = in_process(work, *failure_cases.TRAIN)
    assert result.returncode == 0, result.stderr
    assert made == ["fit-epoch", "validate"]
    epochs = failure_cases.EPOCHS
    assert names == [n for e in range(1, epochs + 1) for n in (f"epoch {e}", f"validate epoch {e}")]
