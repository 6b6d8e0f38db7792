"""The text template and the offline encoder."""
import numpy as np
import polars as pl
import pytest

from pipeline.config import params_from_dict
from pipeline.tokenizers.embedding import PACKAGED_MINILM, EmbedError, embed_items, encode, item_texts, load_encoder

ITEMS = pl.DataFrame({
    "item_id": [0, 1],
    "raw_item_id": ["A", "B"],
    "title": ["Bunsen  burner", "Pipette &amp; tips"],
    "description": ["<p>Blue flame, adjustable</p>", ""],
    "categories": ["Lab, Heating", "Lab"],
})


def test_template_order_separator_cleaning_and_absent_fields():
    texts, used = item_texts(ITEMS, ["title", "brand", "categories", "description"])
    assert used == ["title", "categories", "description"]  # brand is not a column: skipped
    assert texts == ["Bunsen burner. Lab, Heating. Blue flame, adjustable.", "Pipette & tips. Lab."]


def test_template_options_change_the_text():
    texts, _ = item_texts(ITEMS, ["description", "title"], separator=" | ", field_labels=True,
                          max_words_per_field=2, field_end="")
    assert texts == ["description: Blue flame, | title: Bunsen burner", "title: Pipette &"]
    texts, _ = item_texts(ITEMS, ["title"], max_chars=6)
    assert texts == ["Bunsen", "Pipett"]


def test_template_naming_no_column_is_an_error_listing_the_columns():
    with pytest.raises(EmbedError, match=r"name no column.*'title', 'description', 'categories'"):
        item_texts(ITEMS, ["brand", "features"])


def test_unreachable_hub_model_fails_naming_it_and_the_offline_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbedError) as err:
        load_encoder("sentence-transformers/no-such-model-for-tests", device="cpu")
    assert "no-such-model-for-tests" in str(err.value) and PACKAGED_MINILM in str(err.value)


def test_packaged_encoder_embeds_offline_and_similar_texts_are_closer(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = load_encoder(PACKAGED_MINILM, device="cpu")
    v = encode(enc, ["a red apple", "a green apple", "a diesel truck engine"], batch_size=2, normalize=True,
               progress=False)
    assert v.dtype == np.float32 and v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_embed_items_writes_one_row_per_item_in_id_order(tmp_path):
    ITEMS.write_parquet(tmp_path / "items.parquet")
    p = params_from_dict({"embed": {"normalize": False, "device": "cpu"}})
    stats = embed_items(p, tmp_path / "items.parquet", tmp_path / "out", log=lambda *_: None)
    v = np.load(tmp_path / "out" / "embeddings.npy")
    texts = pl.read_parquet(tmp_path / "out" / "texts.parquet")
    assert v.shape == (2, 384) and stats["items"] == 2 and texts["item_id"].to_list() == [0, 1]
    enc = load_encoder(PACKAGED_MINILM, device="cpu")
    expected = encode(enc, texts["text"].to_list(), batch_size=8, normalize=False, progress=False)
    assert np.allclose(v, expected, atol=1e-5)  # row i is item i's text


def test_a_catalogue_of_empty_texts_is_refused_naming_the_share_and_both_files_ids(tmp_path, monkeypatch):
    """An items file keyed by other ids than the interactions gives every item an empty text: the embed stage
    refuses it before loading the encoder, unless embed.max_empty_share allows it."""
    items = pl.DataFrame({"item_id": [0, 1, 2, 3], "raw_item_id": ["u1", "u2", "u3", "u4"],
                          "title": ["", "", "", "Pipette"]})
    items.write_parquet(tmp_path / "items.parquet")
    (tmp_path / "stats.json").write_text('{"item_ids_sample": ["u1", "u2"], "metadata_ids_sample": ["B01", "B02"]}')
    loaded = []
    monkeypatch.setattr("pipeline.tokenizers.embedding.load_encoder", lambda *a, **k: loaded.append(1) or None)
    p = params_from_dict({"embed": {"device": "cpu"}})
    with pytest.raises(EmbedError, match=r"3 of 4 items \(75.0%\) have an empty text, more than embed.max_empty_share "
                                         r"= 0.05.*first item ids are \['u1', 'u2'\]; the metadata file's first ids "
                                         r"are \['B01', 'B02'\]"):
        embed_items(p, tmp_path / "items.parquet", tmp_path / "out", log=lambda *_: None)
    assert not loaded and not (tmp_path / "out").exists()
    allowed = params_from_dict({"embed": {"device": "cpu", "max_empty_share": 0.75}})
    monkeypatch.setattr("pipeline.tokenizers.embedding.encode",
                        lambda enc, texts, **k: np.zeros((len(texts), 4), np.float32))
    assert embed_items(allowed, tmp_path / "items.parquet", tmp_path / "out", log=lambda *_: None)["empty_texts"] == 3
