"""T5's encoder-decoder forward pass, written lean: the function of Hugging Face's ``T5ForConditionalGeneration``
on that module's own weights, in fewer and cheaper operations.

The module stays the container of the parameters (its initialisation, its state-dict names, so model folders
load either way); only its forward pass is replaced, for training and for the encoder pass of a search.
``tests/test_t5_forward.py`` checks the function against the library's: the same logits (float32, within
1e-5), the same loss and the same gradients. What makes it cheaper (measured with benchmarks/bench_train.py:
docs/performance.md, "Speed"):

- explicit precision: under a bfloat16 autocast every matmul runs in bfloat16 and the residual stream stays
  float32 as in the library, but each activation is cast once, where the library casts a layer norm's
  output once per projection and the feed-forward hidden states to float32 and back (``T5DenseActDense``);
- one matmul for a layer's query, key and value projections, and one for every decoder layer's
  cross-attention keys and values;
- the relative position bias and the padding mask summed once per pass, not in every layer;
- dropout on a CPU from four 16-bit lanes per 64-bit random draw, applied as a multiplication by a 0/1 mask
  (PyTorch's CPU dropout draws one number per element, and ``torch.where`` runs a slow kernel on this
  CPU); the inverse keep rate is folded into the next projection's weights or the residual addition.

On CUDA and under ``torch.compile`` dropout is PyTorch's own (a GPU draws its masks inside fused kernels).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from transformers import T5ForConditionalGeneration


def compute_dtype(device: torch.device) -> torch.dtype:
    """The dtype matmuls run in: the autocast dtype when an autocast is on for ``device``, else float32."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return torch.float32


def _realised_drop(p: float) -> int:
    """The CPU lanes' drop threshold: P(drop) = round(p * 65536) / 65536."""
    return round(p * 65536)


def _cpu_lanes(device: torch.device) -> bool:
    """Whether dropout draws :func:`random_lanes` (eager on a CPU) rather than calling PyTorch's dropout."""
    return device.type == "cpu" and not torch.compiler.is_compiling()


def random_lanes(n: int) -> torch.Tensor:
    """``n`` uniform random int16 values, four per 64-bit draw of NumPy's SFC64 generator, seeded from torch's
    generator (so ``torch.manual_seed`` and a resumed run's restored torch state decide them). SFC64 draws
    64-bit words faster than torch's Mersenne Twister (``random_``) on a CPU."""
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    words = np.random.SFC64(seed).random_raw((n + 3) // 4)
    return torch.from_numpy(words.view(np.int16)[:n])


def drop_scale(p: float, training: bool, device: torch.device) -> float:
    """The factor that makes :func:`drop`'s output unbiased: 1 / (realised keep rate) where ``drop`` leaves its
    output unscaled (training on a CPU), else 1."""
    if not training or p == 0.0 or not _cpu_lanes(device):
        return 1.0
    return 65536 / (65536 - _realised_drop(p))


def drop(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout whose rescaling the caller folds into the next linear operation (a pass over ``x`` saved):
    ``x`` with a fraction ``p`` of its elements zeroed, to be multiplied by ``drop_scale(p, ...)``.

    On a CPU one 64-bit draw gives four 16-bit lanes (:func:`random_lanes`), each compared with round(p * 65536): p is
    realised to within 1/65536 (0.1 -> 0.10000610) and the factor is the exact inverse of the realised keep rate.
    On CUDA and under ``torch.compile`` this is PyTorch's dropout (already rescaled; the factor is then 1)."""
    if not training or p == 0.0:
        return x
    if not _cpu_lanes(x.device):
        return F.dropout(x, p, True)
    n = x.numel()
    keep = random_lanes(n).view(x.shape) >= _realised_drop(p) - 32768
    # bool -> uint8 -> x.dtype and a multiplication: x * bool and torch.where run slower kernels on a CPU
    return x * keep.view(torch.uint8).to(x.dtype)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout as ``torch.nn.functional.dropout`` computes it (the kept values rescaled), by :func:`drop`."""
    scale = drop_scale(p, training, x.device)
    x = drop(x, p, training)
    return x * scale if scale != 1.0 else x


def rms_norm(x: torch.Tensor, layer_norm: torch.nn.Module, dtype: torch.dtype) -> torch.Tensor:
    """``T5LayerNorm`` (a root-mean-square norm, statistics in float32), its output cast once to ``dtype``."""
    return F.rms_norm(x.float(), (x.shape[-1],), layer_norm.weight.float(), layer_norm.variance_epsilon).to(dtype)


def _residual(x: torch.Tensor, update: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``x + dropout(update)``, the dropout factor applied inside the addition."""
    scale = drop_scale(p, training, x.device)
    update = drop(update, p, training)
    return torch.add(x, update, alpha=scale) if scale != 1.0 else x + update


@dataclass
class _Weights:
    """A block's projections in the compute dtype, cast once per pass (not once per length group), with the
    dropout factor of what each output projection reads folded in before the one rounding."""
    qkv: torch.Tensor  # self-attention q, k and v stacked: one matmul
    out: torch.Tensor
    ff_in: list[torch.Tensor]  # wi, or the gated wi_0 and wi_1
    ff_out: torch.Tensor
    cross_q: torch.Tensor | None = None
    cross_out: torch.Tensor | None = None


def _block_weights(block: torch.nn.Module, dtype: torch.dtype, training: bool, device: torch.device) -> _Weights:
    def cast(weight: torch.Tensor, p: float = 0.0) -> torch.Tensor:
        scale = drop_scale(p, training, device)
        return (weight * scale if scale != 1.0 else weight).to(dtype)
    attn, dense = block.layer[0].SelfAttention, block.layer[-1].DenseReluDense
    gated = hasattr(dense, "wi_0")
    weights = _Weights(qkv=torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]).to(dtype),
                       out=cast(attn.o.weight, attn.dropout),
                       ff_in=[cast(dense.wi_0.weight), cast(dense.wi_1.weight)] if gated else [cast(dense.wi.weight)],
                       ff_out=cast(dense.wo.weight, dense.dropout.p))
    if len(block.layer) == 3:  # a decoder block
        cross = block.layer[1].EncDecAttention
        weights.cross_q, weights.cross_out = cast(cross.q.weight), cast(cross.o.weight, cross.dropout)
    return weights


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, p: float,
            training: bool) -> torch.Tensor:
    """softmax(q k^T + bias) v, heads first, merged to (B, S, H * dk); T5 does not scale the scores (its
    initialisation accounts for it). The softmax runs in float32 as the library's; the probabilities' dropout
    factor is in the output projection's weights."""
    scores = torch.matmul(q, k.transpose(-1, -2)) + bias  # float32: the bias is
    probs = drop(torch.softmax(scores, dim=-1).to(v.dtype), p, training)
    out = torch.matmul(probs, v)
    B, H, S, dk = out.shape
    return out.transpose(1, 2).reshape(B, S, H * dk)


def _self_attention(layer: torch.nn.Module, x: torch.Tensor, bias: torch.Tensor, weights: _Weights,
                    training: bool) -> torch.Tensor:
    """``T5LayerSelfAttention``: x + dropout(o(attention(layer_norm(x)))), q, k and v from one matmul."""
    attn = layer.SelfAttention
    B, S, _ = x.shape
    qkv = F.linear(rms_norm(x, layer.layer_norm, weights.qkv.dtype), weights.qkv)
    q, k, v = qkv.view(B, S, 3, attn.n_heads, attn.key_value_proj_dim).permute(2, 0, 3, 1, 4).unbind(0)
    out = _attend(q, k, v, bias, attn.dropout, training)  # unbind: one gradient buffer, not one per slice
    return _residual(x, F.linear(out, weights.out), layer.dropout.p, training)


def _cross_attention(layer: torch.nn.Module, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                     bias: torch.Tensor, weights: _Weights, training: bool) -> torch.Tensor:
    """``T5LayerCrossAttention`` over precomputed encoder keys and values (B, H, S, dk)."""
    attn = layer.EncDecAttention
    B, T, _ = x.shape
    q = F.linear(rms_norm(x, layer.layer_norm, weights.cross_q.dtype), weights.cross_q)
    q = q.view(B, T, attn.n_heads, attn.key_value_proj_dim).transpose(1, 2)
    out = _attend(q, keys, values, bias, attn.dropout, training)
    return _residual(x, F.linear(out, weights.cross_out), layer.dropout.p, training)


def _feed_forward(layer: torch.nn.Module, x: torch.Tensor, weights: _Weights, training: bool) -> torch.Tensor:
    """``T5LayerFF``: x + dropout(wo(dropout(act(wi(layer_norm(x)))))), gated (``wi_0``, ``wi_1``) or not."""
    dense = layer.DenseReluDense
    normed = rms_norm(x, layer.layer_norm, weights.ff_out.dtype)
    hidden = dense.act(F.linear(normed, weights.ff_in[0]))
    if len(weights.ff_in) == 2:
        hidden = hidden * F.linear(normed, weights.ff_in[1])
    hidden = drop(hidden, dense.dropout.p, training)
    return _residual(x, F.linear(hidden, weights.ff_out), layer.dropout.p, training)


def _padding_bias(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, S) float32: 0 where ``mask`` keeps a key, the lowest float where it masks it (exp -> 0)."""
    return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(
        ~mask.bool(), torch.finfo(torch.float32).min)[:, None, None, :]


def encode(t5: T5ForConditionalGeneration, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``t5.encoder(inputs_embeds=embeds, attention_mask=mask).last_hidden_state``: (B, S, d), float32.

    On a CPU the batch's rows run in groups of similar length, each as wide as its own longest history
    (:func:`length_groups`): a row's states do not depend on how far it is padded, so this is the same
    function at a fraction of the work where lengths vary (the Amazon Scientific split: 3.8 history items
    on average, padded to 20 in nearly every batch of 256). Padded positions beyond a group's width hold
    zeros instead of the states of padding tokens; every reader masks them (cross-attention, pooling)."""
    stack, training, device = t5.encoder, t5.training, embeds.device
    dtype = compute_dtype(device)
    with torch.autocast(device.type, enabled=False):
        weights = [_block_weights(block, dtype, training, device) for block in stack.block]
        groups = None
        if GROUP_LENGTHS and _cpu_lanes(device):
            groups = length_groups(mask.sum(1).tolist())
        if groups is None:
            return _encode(stack, weights, embeds, mask)
        S = embeds.shape[1]
        order = torch.as_tensor([row for rows, _ in groups for row in rows], device=device)
        parts = []
        for rows, width in groups:
            rows = torch.as_tensor(rows, device=device)
            # index_select, not embeds[rows]: its gradient is an index_add, cheaper than indexing's index_put
            states = _encode(stack, weights, embeds.index_select(0, rows)[:, :width], mask[rows, :width])
            parts.append(F.pad(states, (0, 0, 0, S - width)))
        return torch.cat(parts).index_select(0, torch.argsort(order))


# The cost of a group of n rows as wide as w tokens, in tokens of a linear layer: n * w for the projections
# and feed-forward layers, n * w * w / ATTENTION_TOKENS for the attention's (w x w) scores, softmax and
# dropout, and GROUP_TOKENS for the operations each group runs once more. A batch is split only where that
# saves more than a quarter of its cost (SPLIT_BELOW): every split makes tensors of new sizes (fresh
# allocations of other sizes each step), which on nearly uniform lengths cost more time and memory than the
# padding they save (ML-100K: docs/performance.md, "Speed"). Fitted on the default TIGER block on a CPU; a
# coarse fit only moves where groups split.
ATTENTION_TOKENS = 100
GROUP_TOKENS = 2048
SPLIT_BELOW = 0.75
GROUP_LENGTHS = True  # False: one group (the benchmark counts the FLOPs of padded batches with it)


def length_groups(lengths: list[int]) -> list[tuple[list[int], int]] | None:
    """The batch's rows (their ``lengths`` in tokens) split into groups of similar length that minimise the
    padded work (an exact dynamic programme over the sorted distinct lengths), as (rows, width) pairs; None
    when one group, as wide as the longest row, costs less than 1 / SPLIT_BELOW times the best split."""
    order = sorted(range(len(lengths)), key=lambda row: lengths[row])
    ranked = [lengths[row] for row in order]
    ends = [i + 1 for i in range(len(ranked)) if i + 1 == len(ranked) or ranked[i + 1] != ranked[i]]

    def cost(start: int, end: int) -> float:
        n, w = end - start, ranked[end - 1]
        return GROUP_TOKENS + n * w * (1 + w / ATTENTION_TOKENS)
    best = {0: (0.0, -1)}  # end -> (cost of the rows before it, where its last group starts)
    for end in ends:
        best[end] = min((best[start][0] + cost(start, end), start) for start in [0] + ends if start < end)
    cuts, end = [], len(ranked)
    while end:
        start = best[end][1]
        cuts.append((start, end))
        end = start
    if len(cuts) == 1 or best[len(ranked)][0] > SPLIT_BELOW * cost(0, len(ranked)):
        return None
    return [(order[start:end], ranked[end - 1]) for start, end in reversed(cuts)]


def _encode(stack: torch.nn.Module, weights: list[_Weights], embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    training, S = stack.training, embeds.shape[1]
    first = stack.block[0].layer[0].SelfAttention
    # position bias (1, H, S, S) + padding (B, 1, 1, S), once for every layer
    bias = first.compute_bias(S, S, device=embeds.device).float() + _padding_bias(mask)
    x = dropout(embeds.float(), stack.dropout.p, training)
    for block, block_weights in zip(stack.block, weights):
        x = _self_attention(block.layer[0], x, bias, block_weights, training)
        x = _feed_forward(block.layer[-1], x, block_weights, training)
    return dropout(rms_norm(x, stack.final_layer_norm, torch.float32), stack.dropout.p, training)


def decode(t5: T5ForConditionalGeneration, embeds: torch.Tensor, encoded: torch.Tensor,
           encoder_mask: torch.Tensor) -> torch.Tensor:
    """``t5.decoder(inputs_embeds=embeds, encoder_hidden_states=encoded, encoder_attention_mask=encoder_mask)``'s
    last hidden state (B, T, d), float32: causal self-attention over ``embeds`` and cross-attention over
    ``encoded``, whose keys and values for every layer come from one matmul."""
    stack, training, device = t5.decoder, t5.training, embeds.device
    dtype = compute_dtype(device)
    T = embeds.shape[1]
    with torch.autocast(device.type, enabled=False):
        first = stack.block[0].layer[0].SelfAttention
        causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
        self_bias = first.compute_bias(T, T, device=device).float().masked_fill(~causal, torch.finfo(torch.float32).min)
        cross_bias = _padding_bias(encoder_mask)
        kv = cross_keys_values(stack, encoded.to(dtype), dtype)
        kv = kv.permute(2, 3, 0, 4, 1, 5).unbind(0)  # per layer (2, B, H, S, dk)
        x = dropout(embeds.float(), stack.dropout.p, training)
        for i, block in enumerate(stack.block):
            weights = _block_weights(block, dtype, training, device)
            x = _self_attention(block.layer[0], x, self_bias, weights, training)
            x = _cross_attention(block.layer[1], x, *kv[i].unbind(0), cross_bias, weights, training)
            x = _feed_forward(block.layer[-1], x, weights, training)
        return dropout(rms_norm(x, stack.final_layer_norm, torch.float32), stack.dropout.p, training)


def cross_keys_values(decoder: torch.nn.Module, encoded: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Every decoder layer's cross-attention keys and values of ``encoded`` (B, S, d) from one matmul in
    ``dtype``: (B, S, layers, 2, heads, d_kv), index 0 of the fourth axis the keys, 1 the values."""
    weight = torch.cat([w for block in decoder.block for w in (block.layer[1].EncDecAttention.k.weight,
                                                               block.layer[1].EncDecAttention.v.weight)])
    attention = decoder.block[0].layer[1].EncDecAttention
    B, S, _ = encoded.shape
    return F.linear(encoded, weight.to(dtype)).view(B, S, len(decoder.block), 2, attention.n_heads,
                                                    attention.key_value_proj_dim)


def scale_decoder_output(t5: T5ForConditionalGeneration, decoded: torch.Tensor) -> torch.Tensor:
    """T5's rescaling of the decoder's last states before its tied output projection (d_model ** -0.5)."""
    return decoded * (t5.model_dim ** -0.5) if t5.config.scale_decoder_outputs else decoded


def lm_logits(t5: T5ForConditionalGeneration, decoded: torch.Tensor) -> torch.Tensor:
    """The tied output projection of the decoder states, after T5's rescaling (d_model ** -0.5), in the
    compute dtype as the library computes it under autocast."""
    dtype = compute_dtype(decoded.device)
    with torch.autocast(decoded.device.type, enabled=False):
        return F.linear(scale_decoder_output(t5, decoded).to(dtype), t5.lm_head.weight.to(dtype))
