"""Training throughput (samples/s) of the generative recommender and SASRec with the shared trainer's
step (forward, backward, clip, AdamW), on synthetic Amazon-shaped data (history up to 20 items).
Runs unchanged on CUDA (bf16 autocast there, as in training). `--precision bf16` measures the CPU
bf16 opt-in (`train.precision`) against float32 in the same process.

    python benchmarks/bench_train.py --steps 30 --batch-size 256 [--precision bf16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pipeline.models.tiger import Tiger, TigerConfig
from pipeline.recdata import Split
from pipeline.precision import PRECISIONS, autocast


def synthetic(n_samples: int, n_items: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.geometric(0.15, n_samples), 20)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    return Split(np.arange(n_samples), offsets, rng.integers(0, n_items, offsets[-1]), rng.integers(0, n_items, n_samples))


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
    ap.add_argument("--precision", default="auto", choices=sorted(PRECISIONS),
                    help="also time TIGER under this setting, next to float32")
    args = ap.parse_args()
    device = torch.device(args.device)
    split = synthetic(args.batch_size * (args.steps + 3), args.items, 0)
    rng = np.random.default_rng(1)
    codes = np.column_stack([rng.integers(0, 256, args.items) for _ in range(3)] + [np.arange(args.items) % 256])
    torch.manual_seed(0)
    tiger = Tiger(TigerConfig(n_items=args.items, depth=4, codebook_size=256), torch.as_tensor(codes))
    print(f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} timed steps")
    base = throughput(tiger, split, args.batch_size, args.steps, device)
    print(f"TIGER (T5 4+4, d 128): {base:,.0f} samples/s")
    if args.precision != "auto":
        other = throughput(tiger, split, args.batch_size, args.steps, device, args.precision)
        print(f"TIGER, precision {args.precision}: {other:,.0f} samples/s (x{other / base:.2f})")
    from pipeline.models.sasrec import SASRec, SASRecConfig

    sasrec = SASRec(SASRecConfig(n_items=args.items, max_len=20))
    print(f"SASRec (default block): {throughput(sasrec, split, args.batch_size, args.steps, device):,.0f} samples/s")


if __name__ == "__main__":
    main()
