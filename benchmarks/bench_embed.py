"""Throughput of the semantic-ID stages: `embed` items/s (the offline default encoder on real item
texts) and RQ-VAE training steps/s (default sizes: 384 -> 512/256/128 -> e=128, L=3, K=256, batch 1024).
Runs unchanged on CUDA.

    python benchmarks/bench_embed.py --items 2000 --rqvae-steps 50
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from pipeline.tokenizer_schemas import RQVAETokenizer
from pipeline.tokenizers.embedding import PACKAGED_MINILM, encode, item_texts, load_encoder
from pipeline.tokenizers.rqvae_training import train_rqvae

SCIENTIFIC = Path(__file__).resolve().parents[2] / "shared/data/collisiongenrec-scientific/Scientific.item.json"


def texts(n: int) -> list[str]:
    """Real Amazon item texts when the shared data is beside the project, else synthetic sentences."""
    if SCIENTIFIC.exists():
        raw = json.loads(SCIENTIFIC.read_text())
        items = pl.DataFrame([{"title": v.get("title", ""), "categories": v.get("categories", ""),
                               "description": v.get("description", "")} for v in raw.values()])
        out, _ = item_texts(items, ["title", "categories", "description"])
        return (out * (n // len(out) + 1))[:n]
    return [f"item {i}: a product with features {i % 97} and {i % 89}, for use in lab {i % 13}." for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rqvae-steps", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    docs = texts(args.items)
    encoder = load_encoder(PACKAGED_MINILM, args.device, max_seq_length=256)
    encode(encoder, docs[: args.batch_size], batch_size=args.batch_size, normalize=True, progress=False)  # warm-up
    t = time.perf_counter()
    vectors = encode(encoder, docs, batch_size=args.batch_size, normalize=True, progress=False)
    seconds = time.perf_counter() - t
    print(f"embed: {len(docs):,} items ({np.mean([len(d) for d in docs]):.0f} chars mean) in {seconds:.1f} s = "
          f"{len(docs) / seconds:,.0f} items/s on {args.device}")

    n = 1024 * args.rqvae_steps  # one epoch of `rqvae_steps` batches of 1024
    z = np.resize(vectors, (n, vectors.shape[1])) + np.random.default_rng(0).normal(0, 0.01, (n, vectors.shape[1]))
    block = RQVAETokenizer(hidden=[512, 256, 128], code_dim=128, levels=3, codebook_size=256, epochs=1,
                           batch_size=1024, lr=1e-3, optimizer="adamw", weight_decay=1e-4, dead_code_restart=False,
                           patience=0, device=args.device)
    t = time.perf_counter()
    train_rqvae(z.astype(np.float32), block, seed=0, progress=False)
    seconds = time.perf_counter() - t
    print(f"RQ-VAE: {args.rqvae_steps} steps of batch 1024 (+ k-means init and the epoch's code statistics) in "
          f"{seconds:.1f} s = {args.rqvae_steps / seconds:.1f} steps/s on {args.device}")


if __name__ == "__main__":
    main()
