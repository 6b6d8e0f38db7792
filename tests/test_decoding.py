"""The constrained decoder can only produce real items, whatever the model's scores say."""
import itertools

import numpy as np
import pytest
import torch

from pipeline.models.tiger.decoding import PrefixIndex, constrained_beam_search


def random_ids(n, depth, K, seed):
    g = torch.Generator().manual_seed(seed)
    # skewed codes so that some prefixes are crowded and many are empty
    codes = torch.unique((torch.rand(n, depth, generator=g) ** 3 * K).long(), dim=0)
    return codes[torch.randperm(len(codes), generator=g)]


def test_allowed_matches_brute_force_prefix_sets():
    K, depth = 5, 3
    codes = random_ids(40, depth, K, 0)
    index = PrefixIndex(codes, K)
    ids = {tuple(r) for r in codes.tolist()}
    for step in range(depth):
        prefixes = list(itertools.product(range(K), repeat=step))
        keys = torch.tensor([sum(c * K ** (step - 1 - i) for i, c in enumerate(p)) for p in prefixes])
        allowed = index.allowed(keys, step)
        for p, row in zip(prefixes, allowed.tolist()):
            expected = [any(i[: step + 1] == (*p, c) for i in ids) for c in range(K)]
            assert row == expected


def test_items_maps_keys_back_and_rejects_non_items():
    K = 4
    codes = torch.tensor([[0, 1, 2], [3, 3, 0], [1, 0, 0]])
    index = PrefixIndex(codes, K)
    keys = torch.tensor([0 * 16 + 1 * 4 + 2, 3 * 16 + 3 * 4 + 0, 1 * 16, 5])
    assert index.items(keys).tolist() == [0, 1, 2, -1]


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="not unique"):
        PrefixIndex(torch.tensor([[1, 2], [1, 2]]), 4)


@pytest.mark.parametrize("seed", range(8))
def test_random_scores_never_produce_an_invalid_item(seed):
    K, depth, batch, beam = 16, 4, 6, 12
    codes = random_ids(int(np.random.default_rng(seed).integers(5, 300)), depth, K, seed)
    index = PrefixIndex(codes, K)
    g = torch.Generator().manual_seed(seed)

    def step_fn(state, step):
        # adversarial scores: the model "prefers" codes no item has at this position
        scores = torch.randn(batch * beam, K, generator=g) * 5
        return torch.log_softmax(scores, -1), state

    items, scores = constrained_beam_search(step_fn, None, batch, beam, index, lambda s, *_: s)
    valid = items >= 0
    assert bool((items < len(codes)).all())
    for row, ok in zip(items.tolist(), valid.tolist()):
        real = [r for r, v in zip(row, ok) if v]
        assert len(real) == len(set(real))  # no item twice in a list
    # a list is short only when the catalogue has fewer items than the beam
    assert int(valid.sum(1).min()) == min(beam, len(codes))
    assert bool(torch.isfinite(scores[valid]).all()) and bool((scores[:, :-1] >= scores[:, 1:]).all())
