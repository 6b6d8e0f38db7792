"""Constrained beam search over semantic IDs: every finished beam is a real item (methods.md §4).

The item IDs are fixed-length digit strings (c_1..c_L, c_dup) in base K. Reading each ID as one
integer key, the IDs that extend a prefix p (j digits known) form the key range
[p * K^(D-j), (p + 1) * K^(D-j)); with the keys sorted, "is prefix p + code c valid?" is two
``searchsorted`` calls, for all beams and all K codes at once. The index is O(items) tensors on the
model's device (no Python trie, no Python call per beam), and decoding reuses the decoder's
key/value cache, reordering it when beams are re-ranked.
"""
from __future__ import annotations

import torch


class PrefixIndex:
    """Sorted integer keys of every item's ID, for vectorised prefix-validity checks."""

    def __init__(self, codes: torch.Tensor, codebook_size: int):
        """``codes``: (N, D) long, the full ID of item i in row i (unique rows)."""
        n, depth = codes.shape
        if codebook_size ** depth >= 2 ** 62:
            raise ValueError(f"IDs of {depth} digits in base {codebook_size} do not fit in 64-bit keys")
        self.depth, self.base, self.n_items = depth, codebook_size, n
        radix = codebook_size ** torch.arange(depth - 1, -1, -1, device=codes.device, dtype=torch.long)
        keys = (codes.long() * radix).sum(dim=1)
        self.sorted_keys, order = torch.sort(keys)
        if n > 1 and bool((self.sorted_keys[1:] == self.sorted_keys[:-1]).any()):
            raise ValueError("semantic IDs are not unique: two items share an ID")
        self.item_of_sorted = order

    def to(self, device) -> "PrefixIndex":
        self.sorted_keys = self.sorted_keys.to(device)
        self.item_of_sorted = self.item_of_sorted.to(device)
        return self

    def allowed(self, prefixes: torch.Tensor, step: int) -> torch.Tensor:
        """(M, K) bool: may code c follow prefix m (``step`` digits already chosen)?"""
        span = self.base ** (self.depth - step - 1)
        cand = prefixes[:, None] * self.base + torch.arange(self.base, device=prefixes.device)[None, :]
        lo = torch.searchsorted(self.sorted_keys, cand * span)
        hi = torch.searchsorted(self.sorted_keys, (cand + 1) * span)
        return hi > lo

    def items(self, keys: torch.Tensor) -> torch.Tensor:
        """Item id of each full key; -1 where the key is no item's ID."""
        pos = torch.searchsorted(self.sorted_keys, keys).clamp(max=self.n_items - 1)
        found = self.sorted_keys[pos] == keys
        return torch.where(found, self.item_of_sorted[pos], torch.full_like(keys, -1))


@torch.no_grad()
def constrained_beam_search(step_fn, start_state, batch_size: int, beam_size: int, index: PrefixIndex,
                            reorder_fn) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over ``index.depth`` digits.

    ``step_fn(state, step) -> (logprobs (B*beam, K) over the codes of this step's level, state)`` runs the
    decoder one token on every beam (it feeds the last chosen codes, kept in the state);
    ``reorder_fn(state, beam_idx (B*beam,), codes (B*beam,), step) -> state`` re-ranks the cache and appends
    the chosen codes. Returns item ids (B, beam) best first (-1: no valid item; a dead beam) and scores.
    """
    device = index.sorted_keys.device
    K = index.base
    scores = torch.full((batch_size, beam_size), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam at the start: the others would duplicate it
    prefixes = torch.zeros(batch_size * beam_size, dtype=torch.long, device=device)
    state = start_state
    for step in range(index.depth):
        logprobs, state = step_fn(state, step)
        logprobs = logprobs.float().masked_fill(~index.allowed(prefixes, step), float("-inf"))
        total = (scores.reshape(-1, 1) + logprobs).reshape(batch_size, beam_size * K)
        scores, flat = total.topk(beam_size, dim=1)
        parent = flat // K
        code = flat % K
        beam_idx = (parent + torch.arange(batch_size, device=device)[:, None] * beam_size).reshape(-1)
        prefixes = prefixes[beam_idx] * K + code.reshape(-1)
        state = reorder_fn(state, beam_idx, code.reshape(-1), step)
    items = index.items(prefixes).reshape(batch_size, beam_size)
    items = torch.where(torch.isfinite(scores), items, torch.full_like(items, -1))
    return items, scores
