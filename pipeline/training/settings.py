"""The one trainer's settings (``methods.<name>.train``), apart from the rest of the params schema: they
decide a model's weights, so this file is a code dependency of every train stage (dvc.yaml) and
config.py is not.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Precision = Literal["auto", "bf16", "fp32"]


class TrainConfig(_Strict):
    """The one trainer's settings (``methods.<name>.train``); defaults are the DECOR appendix's."""
    epochs: int = Field(200, ge=0)  # DECOR appendix: <= 200 epochs
    batch_size: int = Field(256, ge=1)  # DECOR appendix / DiscRec: 256
    lr: float = Field(3e-3, gt=0)  # DECOR appendix: 0.003
    weight_decay: float = Field(0.05, ge=0)  # DECOR appendix: 0.05
    warmup_steps: int = Field(10_000, ge=0)  # DECOR appendix: 10k warmup steps
    schedule: Literal["cosine", "inverse_sqrt"] = "cosine"  # DECOR appendix: cosine; inverse_sqrt as in T5
    max_grad_norm: float = Field(1.0, ge=0)  # DECOR appendix: 1.0 (0 = no clipping)
    eval_every: int = Field(1, ge=1)  # epochs between validations
    patience: int = Field(20, ge=1)  # validations without improvement before stopping (DECOR: 20)
    eval_batch_size: int = Field(256, ge=1)
    beam_size: int = Field(20, ge=1)  # validation list length; beam size for generative models (DECOR: 50)
    max_eval_samples: int = Field(0, ge=0)  # 0 = all validation users; >0 = a fixed random subset
    # 0 = every training sample each epoch; >0 = a fresh random subset of this size per epoch (our
    # choice for CPU budgets on the embedded default; the papers train on everything).
    samples_per_epoch: int = Field(0, ge=0)
    # 0 = no limit; >0 = stop after the epoch that crosses this many minutes of this process's training
    # (validated at that epoch), for "as long as the session allows" runs. Resuming starts a new budget.
    time_budget_minutes: float = Field(0.0, ge=0)
    # auto = bf16 autocast where bfloat16 is native (CUDA; CPUs with AVX512-BF16/AMX: x1.3-1.7 samples/s
    # there, benchmarks/bench_train.py), float32 elsewhere | bf16 = bf16 autocast, refused on a CPU that
    # would emulate it (x0.1 of float32) unless GENREC_FORCE_BF16=1 | fp32 = no autocast anywhere
    # (bit-for-bit comparisons across machines). pipeline/runtime/precision.py; the resolved value is recorded.
    precision: Precision = "auto"
    # auto = torch.compile on CUDA (with CUDA graphs: static batch shapes, one graph replay per step), eager
    # on a CPU, where compiling costs a minute and was slower here (benchmarks/bench_train.py) | true | false.
    # A model or machine that cannot be compiled falls back to eager with a warning; what ran is recorded.
    compile: Literal["auto"] | bool = "auto"
    # false = batches are consecutive chunks of the epoch's random permutation (every paper's loader) |
    # true = within windows of 64 batches, samples are sorted by history length before cutting, and the batches
    # are shuffled: each batch is as wide as its own longest history, so short histories are not padded to 20
    # items (as HF Trainer's group_by_length). Measured: x1.08 samples/s eager on the 2-core CPU (ML-100K), but
    # slower compiled on an H100 (25.5k against 33.8k samples/s: shapes vary, so kernels are dynamic).
    group_by_length: bool = False


