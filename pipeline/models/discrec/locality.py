"""Item boundaries inside TIGER's token sequences, for DiscRec's embedding module (the DiscRec
paper, §III): which item each token belongs to, its position inside the item, and the attention mask
of the localized Transformer (a token attends only to the tokens of its own item).

Layouts (``pipeline.models.tiger.model``): the encoder reads the history items' D tokens each, oldest first, then
EOS, then padding; the decoder reads ``[BOS, c_1, .., c_{D-1}]``, the tokens of one item. As the paper says,
EOS counts as part of the item before it (the last history item) and BOS as part of the item it starts.

Item-level positions (the paper's ``V``, L + 2 rows): row l for the l-th token of any item (0-based, l < D),
row D for EOS, row D + 1 for BOS. Padding gets row 0 and an item index of -1; a padding token attends only
to itself (a row with no allowed key would make the softmax NaN) and no real token attends to it.
"""
from __future__ import annotations

import torch

PADDING_ITEM = -1


def encoder_items(lengths: torch.Tensor, depth: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(item index, item-level position), each (B, width) long, of encoder sequences holding ``lengths``
    (B,) history items of ``depth`` tokens each, then EOS, then padding up to ``width`` tokens."""
    t = torch.arange(width, device=lengths.device)[None, :]
    n_real = (lengths * depth)[:, None]
    item = torch.where(t < n_real, t // depth, torch.full_like(t, PADDING_ITEM))
    item = torch.where(t == n_real, (lengths[:, None] - 1).clamp(min=0), item)  # EOS joins the last item
    position = torch.where(t < n_real, t % depth, torch.zeros_like(t))
    position = torch.where(t == n_real, torch.full_like(t, depth), position)  # the EOS row
    return item, position


def decoder_items(batch_size: int, length: int, depth: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(item index, item-level position), each (B, length) long, of decoder inputs ``[BOS, c_1, ..]``: one item
    whose first token is BOS (row depth + 1), then its codes at rows 0, 1, ..."""
    position = torch.arange(length, device=device) - 1
    position[0] = depth + 1
    return (torch.zeros(batch_size, length, dtype=torch.long, device=device),
            position[None, :].expand(batch_size, length).clone())


def local_attention_mask(item: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, T, T) bool, True where query token i may attend to key token j: the same item (and j <= i when
    ``causal``); a padding token only to itself."""
    same = (item[:, :, None] == item[:, None, :]) & (item[:, :, None] != PADDING_ITEM)
    if causal:
        T = item.shape[1]
        same &= torch.ones(T, T, dtype=torch.bool, device=item.device).tril()
    eye = torch.eye(item.shape[1], dtype=torch.bool, device=item.device)
    return same | (eye & (item == PADDING_ITEM)[:, :, None])
