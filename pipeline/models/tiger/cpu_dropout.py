"""Dropout that costs what it should on a CPU.

PyTorch draws a CPU dropout mask one Mersenne-Twister number per element: in the default 2+2-layer TIGER
step on a 2-core CPU that was 38 % of the time (``torch.profiler``: ``aten::bernoulli_``), while removing
dropout altogether made the step 1.66 times as fast. Here one 64-bit draw gives four 16-bit lanes, each
compared with round(p * 65536), and the kept values are scaled by the exact inverse keep rate, so the
output is unbiased; p is realised to within 1/65536 (0.1 -> 0.10000610). On CUDA, under ``torch.compile``
and at inference the standard dropout runs unchanged (a GPU draws its masks inside fused kernels).

``use_fast_cpu_dropout(t5)`` swaps a Hugging Face T5's ``nn.Dropout`` modules and routes its attention
through :func:`attention`, which is the library's SDPA attention except when training on a CPU with
dropout, where it computes the same attention in plain ops with this dropout on the probabilities.
"""
from __future__ import annotations

import torch
from torch import nn

ATTENTION = "genrec_sdpa_fast_cpu_dropout"


def _standard(x: torch.Tensor) -> bool:
    return x.device.type != "cpu" or torch.compiler.is_compiling()


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if _standard(x):
        return nn.functional.dropout(x, p, training)
    n = x.numel()
    cut = round(p * 65536)  # lanes below cut - 32768 are dropped: P(drop) = cut / 65536
    # the full int64 range: random_() without bounds leaves the sign bit 0, i.e. one lane in four never drops
    lanes = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2**63, 2**63 - 1)
    lanes = lanes.view(torch.int16)[:n].view(x.shape)
    return torch.where(lanes >= cut - 32768, x * (65536 / (65536 - cut)), 0.0)


class FastDropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              is_causal: bool | None = None, position_bias: torch.Tensor | None = None, **kwargs):
    """Hugging Face's SDPA attention, with fast_dropout on the probabilities when training on a CPU."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if dropout == 0.0 or not module.training or _standard(query):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, position_bias=position_bias, **kwargs)
    return plain_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, position_bias)


def plain_attention(module, query, key, value, attention_mask, dropout, scaling, is_causal, position_bias):
    """softmax(q k^T * scale + bias + mask) v with the conventions of the SDPA path: scale 1/sqrt(d) unless
    given; a bool mask keeps True, a float mask is added; without a mask, a causal module with more than one
    query attends to the keys up to its own position."""
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3))
    if scale != 1.0:
        scores = scores * scale
    if position_bias is not None:
        scores = scores + position_bias
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if attention_mask is None and causal and query.shape[2] > 1:
        attention_mask = (torch.arange(query.shape[2], device=query.device)[:, None]
                          >= torch.arange(key.shape[2], device=query.device)[None, :])
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    weights = torch.softmax(scores.float(), dim=-1).to(value.dtype)
    weights = fast_dropout(weights, dropout, True)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), None


def use_fast_cpu_dropout(model: nn.Module) -> bool:
    """Swap ``model``'s dropout modules and, for a Hugging Face model, its attention; False when this
    transformers version cannot register an attention function (the model then keeps its own dropout)."""
    try:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(ATTENTION, attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # the masks the SDPA path receives
        model.set_attn_implementation(ATTENTION)
    except (ImportError, AttributeError, ValueError):
        return False
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
    return True


def use_standard_dropout(model: nn.Module) -> None:
    """Undo :func:`use_fast_cpu_dropout` (the benchmark's "before" row): PyTorch's dropout and SDPA attention."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) == ATTENTION:
        model.set_attn_implementation("sdpa")
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is FastDropout:
                setattr(parent, name, nn.Dropout(child.p))
