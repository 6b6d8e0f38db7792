"""Tokenizers: item vectors -> a trained tokenizer -> unique semantic IDs (the logic of `tokenize@<t>` and
`semantic_ids@<t>`), for every kind a ``tokenizers.<t>`` block's ``model`` names (``pipeline.tokenizers.registry``):
the RQ-VAE (TIGER §3.1), LETTER (the RQ-VAE with LETTER's regularisers) and IDs a user brings."""
from __future__ import annotations

from safetensors.torch import save_file

from pipeline.config import TokenizerParams
from pipeline.io import atomic_dir, write_json
from pipeline.tokenizers.registry import kind_of
from pipeline.tokenizers.semantic_ids import assert_unique, assign_collision_tokens, semantic_id_stats, write_id_table


def tokenize(tp: TokenizerParams, seed: int, out_dir, curve_path, log=print, on_epoch=None) -> dict:
    """Build the tokenizer of block ``tp`` into ``out_dir`` and its per-epoch curve; its final metrics."""
    return kind_of(tp).train(tp, seed, out_dir, curve_path, log=log, on_epoch=on_epoch)


def semantic_ids(tp: TokenizerParams, tokenizer_dir, out_dir, log=print) -> dict:
    """The kind's codes for every item, plus the collision token (TIGER §3.1), checked unique; write ids + meta
    (+ the codebooks, where the kind has code vectors) + stats."""
    derived = kind_of(tp).derive_ids(tp, tokenizer_dir, log=log)
    codes, K = derived.codes, derived.codebook_size
    ids = assign_collision_tokens(codes, K)
    assert_unique(ids)
    stats = {**semantic_id_stats(codes, ids, K), **derived.stats}
    L = codes.shape[1]
    with atomic_dir(out_dir) as tmp:
        write_id_table(ids, tmp / "ids.parquet")
        write_json({"codebook_size": K, "levels": L, "depth": L + 1}, tmp / "meta.json")
        # (L, K, e) codebooks for DECOR's semantic embedding table (docs/method_reference.md §5).
        if derived.codebooks is not None:
            save_file({"codebooks": derived.codebooks}, str(tmp / "codebooks.safetensors"))
    log(", ".join(f"{k} {v}" for k, v in stats.items()))
    return stats
