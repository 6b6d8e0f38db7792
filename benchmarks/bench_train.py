"""Training throughput of the generative recommender and SASRec, measured side by side in one process, on
synthetic Amazon-shaped data (histories up to 20 items) or a pipeline split (``--split``). Runs unchanged on
CUDA. Prints, per model:

- a plain Hugging Face ``T5ForConditionalGeneration`` step of the same config on the same batches (what the
  official repositories run: ``input_ids``, ``attention_mask`` and ``labels`` into the library's forward,
  AdamW's default implementation, the loss read back every step), and with ``--compile-plain`` also compiled;
- the shared trainer's epoch (``Trainer.train_epoch``): T5's function in lean operations
  (``pipeline.models.tiger.t5``), the split on the device and batches cut there, the loss summed on the
  device, fused AdamW on CUDA; eager and with ``torch.compile`` (CUDA graphs on a GPU);
- each also with ``train.group_by_length`` (batches of similar history lengths, each as wide as its own
  longest history);
- samples/s, ms per step, and the achieved TFLOP/s: model FLOPs of a forward and backward of ungrouped
  batches (padded to the batch's longest history; ``torch.utils.flop_counter``) times samples/s. Grouped
  batches do fewer FLOPs for the same samples, so their figure is the useful work's rate, not the
  arithmetic the GPU did.

The first line names the machine (CPU model and native-bf16 flags, or the GPU). ``--precision`` is the
train.precision setting (auto: bf16 where native); ``--both-precisions`` also times the plain step in fp32
against bf16.

    python benchmarks/bench_train.py --steps 30 --batch-size 256            # paper-size TIGER 4+4
    python benchmarks/bench_train.py --method tiger --split data/interim/sequences/train.parquet  # params.yaml's block
    python benchmarks/bench_train.py --method decor --paper-size            # DECOR at TIGER's paper size
"""
from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.config import TrainConfig
from pipeline.data.splits import Split
from pipeline.models.tiger import t5 as lean_t5
from pipeline.models.tiger.model import Tiger, TigerConfig
from pipeline.runtime.devices import describe
from pipeline.runtime.precision import FORCE_ENV, PRECISIONS, autocast, resolve_precision
from pipeline.training.trainer import Trainer

# untimed steps before each row: compilation, and glibc's malloc raising its mmap threshold as blocks are freed
WARM_UP = 8
# the TIGER paper's T5 (Rajput et al. 2023)
PAPER_SIZE = {"num_layers": 4, "num_decoder_layers": 4, "num_heads": 6, "d_kv": 64, "d_ff": 1024}


def synthetic(n_samples: int, n_items: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.15, n_samples), 20)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Split(np.arange(n_samples), offsets, rng.integers(0, n_items, offsets[-1]),
                 rng.integers(0, n_items, n_samples))


class PlainT5(torch.nn.Module):
    """What the official repositories train: Hugging Face's T5ForConditionalGeneration called with input_ids,
    attention_mask and labels, of the same config and on the same batches as ``model`` (our TIGER)."""

    def __init__(self, model: Tiger):
        super().__init__()
        from transformers import T5ForConditionalGeneration

        self.ours, self.t5 = [model], T5ForConditionalGeneration(copy.deepcopy(model.t5.config))

    def make_batch(self, split: Split, idx, device):
        return self.ours[0].make_batch(split, idx, device)

    def loss(self, batch):
        return self.t5(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       labels=batch["labels"]).loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def host_step_rate(model, split: Split, batch_size: int, steps: int, device: torch.device, precision: str,
                   compile_loss: bool = False) -> tuple[float, float]:
    """(samples/s, seconds of warm-up) of a step with host batches and the loss read every step."""
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.compile(model.loss) if compile_loss else model.loss
    batches = list(split.batches(batch_size, shuffle=True, generator=np.random.default_rng(0)))[: steps + WARM_UP]

    def step(idx):
        batch = model.make_batch(split, idx, device)
        with autocast(device, precision):
            loss = loss_fn(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return float(loss.detach())

    t = time.perf_counter()
    for idx in batches[:WARM_UP]:  # warm-up (compilation; the C library's malloc adapting to the step)
        step(idx)
    sync(device)
    warm = time.perf_counter() - t
    t = time.perf_counter()
    for idx in batches[WARM_UP:]:
        step(idx)
    sync(device)
    return sum(len(i) for i in batches[WARM_UP:]) / (time.perf_counter() - t), warm


def trainer_rate(model, split: Split, batch_size: int, steps: int, device: torch.device, precision: str,
                 compile_setting: str, group_by_length: bool = False) -> tuple[float, float, bool]:
    """(samples/s, seconds of warm-up, compiled) of the shared trainer's epoch over ``steps`` batches."""
    config = TrainConfig(epochs=2, batch_size=batch_size, samples_per_epoch=batch_size * steps, warmup_steps=10,
                         precision=precision, compile={"on": True, "off": False}.get(compile_setting, compile_setting),
                         group_by_length=group_by_length)
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, split, split, config, out, seed=0, device=str(device), log=lambda *_: None)
        every = trainer.epoch_batches

        def warm_up_batches():
            """WARM_UP steps; with grouped batches one of each width (each width compiles or records a graph)"""
            first_of_width: dict = {}
            for batch in every():
                first_of_width.setdefault(batch[2], batch)
            return list(first_of_width.values()) if group_by_length else every()[:WARM_UP]
        trainer.epoch_batches = warm_up_batches
        t = time.perf_counter()
        trainer.train_epoch()
        sync(device)
        warm = time.perf_counter() - t
        trainer.epoch_batches = every
        t = time.perf_counter()
        trainer.train_epoch()  # reads its loss once, at the end: the epoch's only host sync
        sync(device)
        return batch_size * steps / (time.perf_counter() - t), warm, trainer.compiled


def flops_per_sample(model, split: Split, batch_size: int, device: torch.device) -> float:
    """Model FLOPs of one forward and backward, per sample (matmuls and attention, as FlopCounterMode counts),
    every row padded to the batch's longest history (the encoder's length groups off)."""
    batch = model.make_batch(split, np.random.default_rng(0).permutation(len(split))[:batch_size], device)
    counter = FlopCounterMode(display=False)
    lean_t5.GROUP_LENGTHS = False
    try:
        with counter:
            model.loss(batch).backward()
    finally:
        lean_t5.GROUP_LENGTHS = True
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / batch_size


def report(name: str, rate: float, batch_size: int, flops: float, device: torch.device, extra: str = "") -> None:
    unit, scale = ("TFLOP/s", 1e12) if device.type == "cuda" else ("GFLOP/s", 1e9)
    print(f"  {name:<44} {rate:>10,.0f} samples/s {1000 * batch_size / rate:>8.2f} ms/step "
          f"{rate * flops / scale:>8.2f} {unit}{extra}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--items", type=int, default=12_000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--method", default="", help="time params.yaml's methods.<name> backbone (a model reading "
                    "semantic IDs; synthetic IDs of its tokenizer's shape) instead of the paper-size TIGER")
    ap.add_argument("--paper-size", action="store_true", help="with --method: TIGER's paper sizes (T5 4+4, "
                    "6 heads x 64, FFN 1024) over the block's backbone")
    ap.add_argument("--precision", default="auto", choices=sorted(PRECISIONS),
                    help="the train.precision setting (default auto: bf16 where native)")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="train.compile for the trainer's compiled row (auto: on CUDA only; off skips the row)")
    ap.add_argument("--compile-plain", action="store_true", help="also time the plain HF step compiled")
    ap.add_argument("--both-precisions", action="store_true", help="also time the plain HF step in fp32 and bf16")
    ap.add_argument("--split", default="", help="a training split of the pipeline (e.g. "
                    "data/interim/sequences/train.parquet) instead of synthetic histories; --items must cover it")
    ap.add_argument("--no-sasrec", action="store_true")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain HF T5 step")
    ap.add_argument("--no-grouped", action="store_true", help="skip the group_by_length rows")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.split:
        from pipeline.data.splits import load_split

        split = load_split(args.split)
        args.items = max(args.items, int(max(split.values.max(), split.targets.max())) + 1)
    else:
        split = synthetic(args.batch_size * (args.steps + WARM_UP), args.items, 0)
    rng = np.random.default_rng(1)
    codes = np.column_stack([rng.integers(0, 256, args.items) for _ in range(3)] + [np.arange(args.items) % 256])
    torch.manual_seed(0)
    if args.method:
        from pipeline.config import load_params
        from pipeline.models.base import ModelInputs
        from pipeline.models.registry import build

        params = load_params()
        block, tok = params.method(args.method), params.tokenizer(params.method(args.method).tokenizer)
        codes = np.column_stack([rng.integers(0, tok.codebook_size, args.items) for _ in range(tok.levels)]
                                + [np.arange(args.items) % tok.codebook_size])
        codebooks = torch.randn(tok.levels, tok.codebook_size, tok.code_dim)
        inputs = ModelInputs(args.items, torch.as_tensor(codes), tok.codebook_size, codebooks)
        backbone = {**block.backbone, **(PAPER_SIZE if args.paper_size else {})}

        def make():
            torch.manual_seed(0)
            return build(block.model, backbone, inputs, params.method_history(args.method), f"methods.{args.method}")
        name = f"methods.{args.method} ({block.model}{', paper size' if args.paper_size else ''})"
    else:
        def make():
            torch.manual_seed(0)
            return Tiger(TigerConfig(n_items=args.items, depth=4, codebook_size=256), torch.as_tensor(codes))
        name = "TIGER (T5 4+4, d 128, paper size)"
    os.environ["TQDM_DISABLE"] = "1"  # no progress bars between the figures
    os.environ[FORCE_ENV] = "1"  # a benchmark measures emulated bf16 too; the train stage refuses it
    precision = resolve_precision(device, args.precision)
    model = make()
    n_params = sum(p.numel() for p in model.parameters())
    flops = flops_per_sample(model.to(device), split, args.batch_size, device)
    print(f"{device}: {describe(device)}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{name}: {n_params / 1e6:.2f}M parameters, {flops / 1e6:.1f} MFLOP per sample (forward + backward); "
          f"batch {args.batch_size}, {args.steps} timed steps; precision {args.precision} -> {precision}", flush=True)

    def plain_rate(precision_used: str, compiled: bool = False) -> tuple[float, float]:
        return host_step_rate(PlainT5(make()), split, args.batch_size, args.steps, device, precision_used,
                              compile_loss=compiled)
    if args.both_precisions:
        fp32, _ = plain_rate("fp32")
        report("plain HF T5 step, fp32", fp32, args.batch_size, flops, device)
        bf16, _ = plain_rate("bf16")
        report("plain HF T5 step, bf16", bf16, args.batch_size, flops, device, f"  (x{bf16 / fp32:.2f} of fp32)")
    plain = 0.0
    if not args.no_plain:
        plain, _ = plain_rate(precision)
        report(f"plain HF T5 step, eager, {precision}", plain, args.batch_size, flops, device)
    if args.compile_plain:
        plain_c, warm = plain_rate(precision, compiled=True)
        report(f"plain HF T5 step, compiled, {precision}", plain_c, args.batch_size, flops, device,
               f"  (warm-up {warm:.0f} s)")
        plain = max(plain, plain_c)

    def beside_plain(rate: float) -> str:
        return f"  (x{rate / plain:.2f} of plain HF)" if plain else ""
    eager, _, _ = trainer_rate(make(), split, args.batch_size, args.steps, device, precision, "off")
    report(f"trainer, eager, {precision}", eager, args.batch_size, flops, device, beside_plain(eager))
    best = eager
    if not args.no_grouped:
        grouped, _, _ = trainer_rate(make(), split, args.batch_size, args.steps, device, precision, "off", True)
        report(f"trainer, eager, group_by_length, {precision}", grouped, args.batch_size, flops, device,
               beside_plain(grouped))
        best = max(best, grouped)
    if args.compile == "on" or (args.compile == "auto" and device.type == "cuda"):
        what = "compiled" + (" + CUDA graphs" if device.type == "cuda" else "")
        for group in (False,) if args.no_grouped else (False, True):
            rate, warm, compiled = trainer_rate(make(), split, args.batch_size, args.steps, device, precision, "on",
                                                group)
            label = (what if compiled else "compile FAILED, eager") + (", group_by_length" if group else "")
            report(f"trainer, {label}, {precision}", rate, args.batch_size, flops, device,
                   f"{beside_plain(rate)}  (warm-up {warm:.0f} s)")
            best = max(best, rate)
    if plain:
        print(f"ours (best) / plain HF (best): x{best / plain:.2f}", flush=True)
    if not args.no_sasrec:
        from pipeline.models.sasrec import SASRec, SASRecConfig

        def sasrec():
            torch.manual_seed(0)
            return SASRec(SASRecConfig(n_items=args.items, max_len=20))
        s_flops = flops_per_sample(sasrec().to(device), split, args.batch_size, device)
        s_host, _ = host_step_rate(sasrec(), split, args.batch_size, args.steps, device, precision)
        report(f"SASRec host step, {precision}", s_host, args.batch_size, s_flops, device)
        s_eager, _, _ = trainer_rate(sasrec(), split, args.batch_size, args.steps, device, precision, "off")
        report(f"SASRec trainer, eager, {precision}", s_eager, args.batch_size, s_flops, device,
               f"  (x{s_eager / s_host:.2f})")


if __name__ == "__main__":
    main()
