"""Does the RQ-VAE's backward pass repeat its bytes on this many threads? (docs/performance.md, "Reproducibility")

Runs the trained tokenizer's forward and backward pass on one batch of items (with repeats, as a training batch
of targets has) several times, and prints which parameters' gradients differ between the passes. On the 2-core
AMD EPYC with two threads the codebook gradient differed in every pass (`book[c]`: an indexed accumulation the CPU
kernel does with atomic adds); with ``F.embedding(c, book)``, which the quantiser now uses, it repeated.
``--index-lookup`` puts the old ``book[c]`` back for the comparison.

    python scripts/codebook_grad_repeat.py --threads 2 [--index-lookup]
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import textwrap

import numpy as np
import torch

from pipeline import paths
from pipeline.runtime.reproducible import portable_cpu_numerics


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokenizer", default="rqvae")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=6)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--index-lookup", action="store_true", help="look codes up with book[c], as before")
    args = ap.parse_args()
    portable_cpu_numerics(log=lambda *a: None)
    torch.set_num_threads(args.threads)
    import pipeline.tokenizers.rqvae as rqvae

    if args.index_lookup:
        source = textwrap.dedent(inspect.getsource(rqvae.RQVAE.quantize))
        assert "q = F.embedding(c, book)" in source, "RQVAE.quantize no longer looks codes up with F.embedding"
        namespace = dict(vars(rqvae))
        exec(source.replace("q = F.embedding(c, book)", "q = book[c]"), namespace)
        rqvae.RQVAE.quantize = namespace["quantize"]
    vectors = torch.from_numpy(np.load(paths.EMBEDDINGS))
    items = torch.randint(0, len(vectors), (args.batch,), generator=torch.Generator().manual_seed(0))
    items[: args.batch // 6] = items[args.batch // 6: 2 * (args.batch // 6)]  # the same target twice

    def gradients() -> dict[str, str]:
        model = rqvae.load_rqvae(paths.tokenizer_dir(args.tokenizer))
        model.train()
        model(vectors[items])["loss"].backward()
        return {n: hashlib.sha256(p.grad.numpy().tobytes()).hexdigest()[:12]
                for n, p in model.named_parameters() if p.grad is not None}

    runs = [gradients() for _ in range(args.repeats)]
    differing = sorted({n for r in runs[1:] for n in r if r[n] != runs[0][n]})
    print(f"{args.repeats} passes on {args.threads} thread(s), lookup "
          f"{'book[c]' if args.index_lookup else 'F.embedding'}: "
          + (f"gradients differ in {differing}" if differing else "every gradient repeated"))


if __name__ == "__main__":
    main()
