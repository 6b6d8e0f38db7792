"""Constrained decoding: our vectorised beam search vs Hugging Face `generate` with
`prefix_allowed_tokens_fn` over a Python trie, on the same model, users and beam size.

Uses the trained TIGER of the pipeline (the model folder data/models/<method>, which holds its IDs, and the
test split) when present, otherwise (or with --paper-size) a TIGER of the paper's size with random
weights on synthetic IDs.
Prints whether the top-K lists are identical and two speed-up factors: of the decoder alone (both
sides decode from the same encoder states, handed to `generate` as `encoder_outputs`; this is what the
two decoders do differently) and end to end (the shared encoder pass added to both), in float32 on
both sides. (Under bf16 autocast `generate` ranks from bf16 logits, rounded to steps of 1/16 or more,
while ours projects to the vocabulary in float32, so their lists differ by how ties fall, not by a bug.)
The default batch is the evaluator's (`eval_batch_size`). Runs unchanged on CUDA.

    python benchmarks/bench_decoder.py --users 512 --beam 20
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from transformers.modeling_outputs import BaseModelOutput

from pipeline.config import TrainConfig
from pipeline.data.splits import Split, load_split
from pipeline.models.tiger.model import BOS, Tiger, TigerConfig


def trained_or_random(method: str, n_users: int, seed: int, paper_size: bool = False):
    model_dir = Path("data/models") / method
    if (model_dir / "best.safetensors").exists() and not paper_size:
        from pipeline.models.folder import load_model

        model, _ = load_model(model_dir)  # the folder alone: its config, IDs and weights
        return model, load_split("data/interim/sequences/test.parquet"), f"trained {method} from {model_dir}"
    rng = np.random.default_rng(seed)
    n_items, K = 12_000, 256
    codes = np.unique(np.column_stack([rng.zipf(1.5, n_items * 2) % K for _ in range(3)]), axis=0)[:n_items]
    codes = np.column_stack([codes, np.zeros(len(codes), dtype=np.int64)])
    torch.manual_seed(seed)
    model = Tiger(TigerConfig(n_items=len(codes), depth=4, codebook_size=K), torch.as_tensor(codes))
    lengths = rng.integers(3, 21, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    split = Split(np.arange(n_users), offsets, rng.integers(0, len(codes), offsets[-1]),
                  rng.integers(0, len(codes), n_users))
    return model, split, "randomly initialised TIGER of the paper's size on synthetic IDs"


def python_trie(item_tokens: torch.Tensor) -> dict:
    root: dict = {}
    for row in item_tokens.tolist():
        node = root
        for tok in row:
            node = node.setdefault(tok, {})
    return root


def hf_generate(model: Tiger, batch, encoded: torch.Tensor, beam: int, trie: dict,
                lookup: dict) -> tuple[np.ndarray, np.ndarray]:
    def allowed(batch_id, input_ids):
        node = trie
        for tok in input_ids.tolist()[1:]:  # skip BOS
            node = node.get(tok, {})
        return list(node.keys())

    out = model.t5.generate(encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                            attention_mask=batch["attention_mask"], num_beams=beam, num_return_sequences=beam,
                            max_new_tokens=model.config.depth, do_sample=False, decoder_start_token_id=BOS,
                            prefix_allowed_tokens_fn=allowed, length_penalty=0.0, early_stopping=True,
                            output_scores=True, return_dict_in_generate=True)
    seqs = out.sequences[:, 1:].tolist()
    items = np.array([lookup.get(tuple(s), -1) for s in seqs]).reshape(-1, beam)
    return items, out.sequences_scores.float().cpu().numpy().reshape(-1, beam)


def measure(model: Tiger, batches, beam: int, trie: dict, device: torch.device) -> dict:
    def timed(fn, inputs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        result = [fn(*x) for x in inputs]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result, time.perf_counter() - t

    lookup = {tuple(r): i for i, r in enumerate(model.item_tokens.tolist())}  # token IDs -> item, built once
    with torch.inference_mode():
        encoded, t_encoder = timed(model.encode, [(b,) for b in batches])
        # warm-up (allocator, thread pools) for both sides
        model.beam_search(encoded[0][0], beam, encoded=encoded[0][1])
        hf_generate(model, *encoded[0], beam, trie, lookup)
        ours, t_ours = timed(lambda b, e: model.beam_search(b, beam, encoded=e), encoded)
        theirs, t_hf = timed(lambda b, e: hf_generate(model, b, e, beam, trie, lookup), encoded)
    ours_items = np.concatenate([o[0].cpu().numpy() for o in ours])
    ours_scores = np.concatenate([o[1].float().cpu().numpy() for o in ours])
    hf_items = np.concatenate([h[0] for h in theirs])
    hf_scores = np.concatenate([h[1] for h in theirs])
    return {
        "identical_lists": float((ours_items == hf_items).all(axis=1).mean()),
        "identical_top10": float((ours_items[:, :10] == hf_items[:, :10]).all(axis=1).mean()),
        "max_score_gap": float(np.abs(ours_scores - hf_scores).max()),
        "encoder_s": t_encoder, "ours_decoder_s": t_ours, "hf_decoder_s": t_hf,
        "decoder_speedup": t_hf / t_ours, "end_to_end_speedup": (t_hf + t_encoder) / (t_ours + t_encoder),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="tiger")
    ap.add_argument("--users", type=int, default=512)
    ap.add_argument("--beam", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=TrainConfig().eval_batch_size)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--paper-size", action="store_true",
                    help="a TIGER of the paper's size (4+4 layers, 6 heads x 64, FFN 1024) with random weights on "
                         "12,000 synthetic IDs, instead of the trained model")
    args = ap.parse_args()
    model, split, what = trained_or_random(args.method, args.users, args.seed, args.paper_size)
    device = torch.device(args.device)
    model.to(device).eval()
    idx = np.arange(min(args.users, len(split)))
    batches = [model.make_batch(split, idx[i : i + args.batch_size], device)
               for i in range(0, len(idx), args.batch_size)]
    trie = python_trie(model.item_tokens.cpu())
    print(f"{what}; {len(idx)} users, beam {args.beam}, batch {args.batch_size}, device {device}, "
          f"{model.config.n_items:,} items")

    r = measure(model, batches, args.beam, trie, device)
    n = len(idx)
    print(f"identical top-{args.beam} lists: {r['identical_lists']:.1%} of users (top-10: {r['identical_top10']:.1%}); "
          f"max |score difference| {r['max_score_gap']:.2e}")
    print(f"decoder: ours {r['ours_decoder_s']:.2f} s ({n / r['ours_decoder_s']:.0f} users/s), HF generate + Python "
          f"trie {r['hf_decoder_s']:.2f} s ({n / r['hf_decoder_s']:.0f} users/s); speed-up x{r['decoder_speedup']:.1f}")
    print(f"end to end (+ the shared encoder pass, {r['encoder_s']:.2f} s): speed-up x{r['end_to_end_speedup']:.1f}")

if __name__ == "__main__":
    main()
