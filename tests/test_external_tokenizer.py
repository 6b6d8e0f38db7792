"""Semantic IDs a user brings (pipeline/tokenizers/external.py, a ``model: external`` tokenizer block): both file
formats, refusals that name the item, and collision tokens made exactly as for the RQ-VAE's codes."""
from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from pipeline.config import ParamsError, params_from_dict
from pipeline.tokenizers.external import read_external_codes
from pipeline.tokenizers.semantic_ids import SemanticIdError, assign_collision_tokens, read_id_table
from pipeline.tokenizers.tokenize import semantic_ids, tokenize

# The catalogue after filtering: pipeline ids 0..3, the source's ids "10", "11", "12", "14"
ITEMS = pl.DataFrame({"item_id": [0, 1, 2, 3], "raw_item_id": ["10", "11", "12", "14"]})
# The source's codes; item "13" was dropped by the k-core filter; "10" and "14" collide
CODES = {"10": [1, 2, 3], "11": [0, 5, 7], "12": [4, 4, 4], "13": [6, 6, 6], "14": [1, 2, 3]}
EXPECTED = np.array([CODES[k] for k in ["10", "11", "12", "14"]])


def letter_index(codes: dict) -> dict:
    return {k: [f"<{chr(97 + level)}_{c}>" for level, c in enumerate(v)] for k, v in codes.items()}


def write(tmp_path, name: str, payload) -> str:
    path = tmp_path / name
    if name.endswith(".json"):
        path.write_text(json.dumps(payload))
    else:
        payload.write_parquet(path)
    return str(path)


@pytest.mark.parametrize("fmt", ["letter_index", "json", "parquet_list", "parquet_columns"])
def test_every_format_gives_the_catalogues_codes_in_item_order(tmp_path, fmt):
    if fmt == "letter_index":
        path = write(tmp_path, "index.json", letter_index(CODES))
    elif fmt == "json":
        path = write(tmp_path, "codes.json", CODES)
    elif fmt == "parquet_list":
        path = write(tmp_path, "codes.parquet",
                     pl.DataFrame({"raw_item_id": list(CODES), "codes": list(CODES.values())}))
    else:
        path = write(tmp_path, "codes.parquet", pl.DataFrame({"raw_item_id": list(CODES),
                                                              **{f"c{i + 1}": [v[i] for v in CODES.values()]
                                                                 for i in range(3)}}))
    codes, K, facts = read_external_codes(path, ITEMS)
    assert np.array_equal(codes, EXPECTED)
    assert K == 8 and facts["ignored_items"] == 1  # 1 + the largest code; "13" is not in the catalogue
    assert facts["format"] == ("letter_index" if fmt == "letter_index" else "json" if fmt == "json" else "parquet")


def test_keys_may_be_the_pipeline_ids(tmp_path):
    path = write(tmp_path, "codes.json", {str(i): v for i, v in enumerate(EXPECTED.tolist())})
    codes, _, _ = read_external_codes(path, ITEMS, key="item_id")
    assert np.array_equal(codes, EXPECTED)


@pytest.mark.parametrize("case,payload,message", [
    ("missing", {k: v for k, v in CODES.items() if k != "12"},
     "1 of the catalogue's 4 items have no codes, e.g. raw_item_id ['12']"),
    ("ragged", {**CODES, "11": [0, 5]}, "item '11' has 2 codes, item '10' has 3"),
    ("negative", {**CODES, "12": [4, -1, 4]}, "item '12' has codes [4, -1, 4], outside [0, 8)"),
    ("not integers", {**CODES, "11": [0, 5.5, 7]}, "item '11': codes must be integers"),
])
def test_bad_codes_are_refused_naming_the_item(tmp_path, case, payload, message):
    with pytest.raises(SemanticIdError, match=re.escape(message)):
        read_external_codes(write(tmp_path, "codes.json", payload), ITEMS)


def test_codes_beyond_the_stated_codebook_are_refused(tmp_path):
    with pytest.raises(SemanticIdError, match=r"item '11' has codes \[0, 5, 7\], outside \[0, 6\)"):
        read_external_codes(write(tmp_path, "codes.json", CODES), ITEMS, codebook_size=6)


def test_letter_tokens_out_of_level_order_are_refused(tmp_path):
    index = letter_index(CODES)
    index["11"] = ["<a_0>", "<c_5>", "<b_7>"]
    with pytest.raises(SemanticIdError, match=r"item '11': token 2 is '<c_5>'; LETTER's index has <b_N> there"):
        read_external_codes(write(tmp_path, "index.json", index), ITEMS)


def test_the_block_must_name_the_catalogue_it_covers():
    with pytest.raises(ParamsError, match="items.parquet"):
        params_from_dict({"tokenizers": {"ref": {"model": "external", "inputs": ["ref.json", "other.json"]}}})


def test_stages_write_ids_with_the_rqvae_collision_tokens(tmp_path):
    items_path = tmp_path / "items.parquet"
    ITEMS.write_parquet(items_path)
    source = write(tmp_path, "index.json", letter_index(CODES))
    params = params_from_dict({"tokenizers": {"ref": {"model": "external", "inputs": [source, str(items_path)]}}})
    block = params.tokenizer("ref")
    stats = tokenize(block, 0, tmp_path / "tok", tmp_path / "curve.csv", log=lambda *_: None)
    assert stats["collision_rate"] == 0.5 and stats["items"] == 4 and stats["levels"] == 3  # "10" and "14"
    ids_stats = semantic_ids(block, tmp_path / "tok", tmp_path / "sid", log=lambda *_: None)
    ids = read_id_table(tmp_path / "sid" / "ids.parquet", 4)
    assert np.array_equal(ids, assign_collision_tokens(EXPECTED, 8))
    assert ids[:, 3].tolist() == [0, 0, 0, 1] and ids_stats["unique_ids"]
    assert json.loads((tmp_path / "sid" / "meta.json").read_text()) == {"codebook_size": 8, "levels": 3, "depth": 4}
    assert not (tmp_path / "sid" / "codebooks.safetensors").exists()  # IDs only: nothing for DECOR's fusion
