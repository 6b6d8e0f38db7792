"""Training throughput (samples/s) of the generative recommender and SASRec with the shared trainer's
step (forward, backward, clip, AdamW), on synthetic Amazon-shaped data (history up to 20 items).
Runs unchanged on CUDA. TIGER is timed in float32 and in bfloat16 autocast in the same process (on a CPU
without native bfloat16 the latter is emulated: the figure `train.precision: bf16` would give there, which
is why `auto` chooses float32 on such CPUs), then under `--precision` as the train stage resolves it. The
first line names the machine (CPU model and its native-bf16 flags, or the GPU). Last, our step against a plain
Hugging Face T5ForConditionalGeneration training step of the same config on the same batches (what the
official repositories run), measured side by side.

    python benchmarks/bench_train.py --steps 30 --batch-size 256 [--precision auto]
    python benchmarks/bench_train.py --method tiger --items 1682   # params.yaml's block instead (ML-100K size)
"""
from __future__ import annotations

import argparse
import copy
import os
import time

import numpy as np
import torch

from pipeline.models.tiger import Tiger, TigerConfig
from pipeline.recdata import Split
from pipeline.devices import describe
from pipeline.precision import FORCE_ENV, PRECISIONS, autocast, resolve_precision


def synthetic(n_samples: int, n_items: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.15, n_samples), 20)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Split(np.arange(n_samples), offsets, rng.integers(0, n_items, offsets[-1]), rng.integers(0, n_items, n_samples))


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


def throughput(model, split: Split, batch_size: int, steps: int, device: torch.device,
               precision: str = "auto") -> float:
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batches = list(split.batches(batch_size, shuffle=True, generator=np.random.default_rng(0)))[: steps + 3]

    def step(idx):
        batch = model.make_batch(split, idx, device)
        with autocast(device, precision):
            loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for idx in batches[:3]:  # warm-up
        step(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for idx in batches[3:]:
        step(idx)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(len(i) for i in batches[3:]) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--items", type=int, default=12_000)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--method", default="", help="time params.yaml's methods.<name> backbone (a model reading "
                    "semantic IDs; synthetic IDs of its tokenizer's shape) instead of the paper-size TIGER")
    ap.add_argument("--precision", default="auto", choices=sorted(PRECISIONS),
                    help="the train.precision setting whose resolution is reported (default auto)")
    args = ap.parse_args()
    device = torch.device(args.device)
    split = synthetic(args.batch_size * (args.steps + 3), args.items, 0)
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
        tiger = build(block.model, block.backbone, inputs, params.filter.max_history, f"methods.{args.method}")
        name = f"methods.{args.method} ({block.model}, params.yaml)"
    else:
        tiger = Tiger(TigerConfig(n_items=args.items, depth=4, codebook_size=256), torch.as_tensor(codes))
        name = "TIGER (T5 4+4, d 128)"
    os.environ[FORCE_ENV] = "1"  # a benchmark measures emulated bf16 too; the train stage refuses it
    resolved = resolve_precision(device, args.precision)
    print(f"{device}: {describe(device)}; batch {args.batch_size}, {args.steps} timed steps")
    fp32 = throughput(tiger, split, args.batch_size, args.steps, device, "fp32")
    print(f"{name}, fp32: {fp32:,.0f} samples/s")
    bf16 = throughput(tiger, split, args.batch_size, args.steps, device, "bf16")
    print(f"{name}, bf16: {bf16:,.0f} samples/s (x{bf16 / fp32:.2f} of fp32)")
    print(f"precision {args.precision} resolves to {resolved} here")
    ours = throughput(tiger, split, args.batch_size, args.steps, device, resolved)
    plain = throughput(PlainT5(tiger), split, args.batch_size, args.steps, device, resolved)
    print(f"{name}, {resolved}: ours {ours:,.0f} samples/s ({1000 * args.batch_size / ours:.1f} ms/step), plain HF "
          f"T5ForConditionalGeneration step {plain:,.0f} samples/s: x{ours / plain:.2f}")
    from pipeline.models.sasrec import SASRec, SASRecConfig

    sasrec = SASRec(SASRecConfig(n_items=args.items, max_len=20))
    sasrec_rate = throughput(sasrec, split, args.batch_size, args.steps, device, resolved)
    print(f"SASRec (default block), {resolved}: {sasrec_rate:,.0f} samples/s")


if __name__ == "__main__":
    main()
