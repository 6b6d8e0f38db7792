"""Item boundaries for DiscRec's localized Transformer (pipeline.models.discrec.locality): no token attends outside its
item, EOS and BOS belong to the adjacent item, padding and one-item histories included."""
import torch

from pipeline.models.discrec.locality import PADDING_ITEM, decoder_items, encoder_items, local_attention_mask

D = 4  # tokens per item: 3 levels + the collision token


def test_encoder_items_and_positions_follow_tigers_layout():
    item, position = encoder_items(torch.tensor([2, 1]), D, width=2 * D + 2)
    assert item[0].tolist() == [0] * D + [1] * D + [1, PADDING_ITEM]  # EOS joins the last item
    assert position[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, D, 0]
    assert item[1].tolist() == [0] * D + [0] + [PADDING_ITEM] * (D + 1)  # a one-item history
    assert position[1].tolist() == [0, 1, 2, 3, D] + [0] * (D + 1)


def test_no_token_attends_outside_its_item_in_the_encoder():
    lengths = torch.tensor([3, 1, 2, 5])
    width = int(lengths.max()) * D + 1
    item, _ = encoder_items(lengths, D, width)
    mask = local_attention_mask(item, causal=False)
    for b, n in enumerate(lengths.tolist()):
        owner = [t // D if t < n * D else (n - 1 if t == n * D else None) for t in range(width)]
        for i in range(width):
            for j in range(width):
                expected = (owner[i] == owner[j]) if owner[i] is not None else (i == j)
                assert bool(mask[b, i, j]) == expected, (b, i, j)
        eos = n * D
        # bidirectional: EOS sees the last item's tokens and they see it
        assert mask[b, eos, (n - 1) * D:eos + 1].all() and mask[b, (n - 1) * D:eos, eos].all()
    # no real token attends to padding, and every row has a key (no NaN softmax)
    real = item != PADDING_ITEM
    assert not (mask & ~real[:, None, :] & real[:, :, None]).any()
    assert mask.any(-1).all()


def test_the_decoder_is_one_item_causal_with_bos_first():
    item, position = decoder_items(2, D, D)
    assert position[0].tolist() == [D + 1, 0, 1, 2]  # BOS row, then the codes' rows
    mask = local_attention_mask(item, causal=True)
    assert torch.equal(mask[0], torch.ones(D, D, dtype=torch.bool).tril())
