"""Constrained beam search over semantic IDs: every finished beam is a real item (docs/method_reference.md §4).

The item IDs are fixed-length digit strings (c_1..c_L, c_dup) in base K, each read as one integer key.
The index is a packed trie: for every level, the sorted keys of the distinct prefixes and a (prefixes, K)
table of the codes that may follow each, as tensors on the model's device (no Python trie, no Python
call per beam). Decoding reuses the decoder's key/value cache, reordering it when beams are re-ranked.
"""
from __future__ import annotations

import torch


class PrefixIndex:
    """Per-level tables of the item IDs, for vectorised prefix-validity checks.

    Level j holds the sorted keys of the distinct j-digit prefixes (the trie's nodes at depth j) and a
    (nodes, K) bool table: may code c follow that prefix? A step of the search looks its beams' prefixes
    up with one ``searchsorted`` of one query per beam and gathers their table rows. Memory is at most
    one byte per (prefix, code) pair: under ``depth * n_items * K`` bytes (85 MB for 266k items with
    K = 256 and 4-digit IDs).
    """

    def __init__(self, codes: torch.Tensor, codebook_size: int):
        """``codes``: (N, D) long, the full ID of item i in row i (unique rows)."""
        n, depth = codes.shape
        if codebook_size ** depth >= 2 ** 62:
            raise ValueError(f"IDs of {depth} digits in base {codebook_size} do not fit in 64-bit keys")
        if n == 0:
            raise ValueError("no items: the constrained decoder needs at least one semantic ID")
        outside = ((codes < 0) | (codes >= codebook_size)).any(dim=1).nonzero().flatten()
        if len(outside):
            i = int(outside[0])
            raise ValueError(f"item {i} has the ID {codes[i].tolist()}: codes must lie in [0, {codebook_size}) "
                             f"({len(outside)} item(s) outside)")
        self.depth, self.base, self.n_items = depth, codebook_size, n
        radix = codebook_size ** torch.arange(depth - 1, -1, -1, device=codes.device, dtype=torch.long)
        keys = (codes.long() * radix).sum(dim=1)
        self.sorted_keys, order = torch.sort(keys)
        same = (self.sorted_keys[1:] == self.sorted_keys[:-1]).nonzero().flatten()
        if len(same):
            a, b = sorted(int(i) for i in order[int(same[0]) : int(same[0]) + 2])
            raise ValueError(f"semantic IDs are not unique: items {a} and {b} share the ID {codes[a].tolist()}")
        self.item_of_sorted = order
        self.level_keys: list[torch.Tensor] = []
        self.level_allowed: list[torch.Tensor] = []
        for step in range(depth):
            span = codebook_size ** (depth - step - 1)
            # the keys are sorted, so their prefixes are too: unique_consecutive numbers the nodes in order
            nodes, node_of_item = torch.unique_consecutive(self.sorted_keys // (span * codebook_size),
                                                           return_inverse=True)
            table = torch.zeros(len(nodes), codebook_size, dtype=torch.bool, device=codes.device)
            table[node_of_item, (self.sorted_keys // span) % codebook_size] = True
            self.level_keys.append(nodes)
            self.level_allowed.append(table)

    def to(self, device) -> "PrefixIndex":
        self.sorted_keys = self.sorted_keys.to(device)
        self.item_of_sorted = self.item_of_sorted.to(device)
        self.level_keys = [k.to(device) for k in self.level_keys]
        self.level_allowed = [t.to(device) for t in self.level_allowed]
        return self

    def allowed(self, prefixes: torch.Tensor, step: int) -> torch.Tensor:
        """(M, K) bool: may code c follow prefix m (``step`` digits already chosen)?"""
        nodes = self.level_keys[step]
        pos = torch.searchsorted(nodes, prefixes).clamp(max=len(nodes) - 1)
        known = nodes[pos] == prefixes  # a dead beam's prefix may be no item's
        return self.level_allowed[step][pos] & known[:, None]

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
