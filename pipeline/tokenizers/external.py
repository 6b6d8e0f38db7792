"""Semantic IDs a user brings (a ``tokenizers.<name>`` block with ``model: external``).

A file maps every item of the catalogue to its codes (c_1..c_L). ``tokenize@<name>`` reads and checks it and
stores the codes in the tokenizer folder; ``semantic_ids@<name>`` adds TIGER's collision token exactly as for the
RQ-VAE's codes (``pipeline.tokenizers.semantic_ids``), so every generative method reads them as any other IDs.
Beside bringing IDs from elsewhere, this is the control that tells a tokenizer problem from a recommender
problem: the same recommender on reference IDs and on ours.

Formats (``format: auto`` picks by the file's suffix and, for JSON, by its first value):
- ``letter_index``: LETTER's ``index.json`` (also the RQ-VAE indices of its successors),
  ``{"<item>": ["<a_12>", "<b_200>", "<c_7>"], ...}``: level l's token carries the l-th letter;
- ``json``: ``{"<item>": [12, 200, 7], ...}``;
- ``parquet``: a key column (``raw_item_id`` or ``item_id``, as ``key`` says) and either a list column
  ``codes`` or one integer column per level ``c1``, ``c2``, ...

Keys are the source's item ids (``key: raw_item_id``, the ids of the interactions file: LETTER's index is keyed
by its ``inter.json``'s item ids) or the pipeline's own 0..N-1 (``key: item_id``). Items of the file that the
k-core filter dropped are ignored; every item of the catalogue must have codes, all of one depth, in
[0, codebook_size).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.tokenizers.semantic_ids import SemanticIdError

FORMATS = ("auto", "letter_index", "json", "parquet")
KEYS = ("raw_item_id", "item_id")
CODES_FILE = "codes.parquet"  # in the tokenizer folder: item_id, c1..cL (the checked codes)
_LETTER_TOKEN = re.compile(r"^<([a-z])_(\d+)>$")


def _detect_format(path: Path) -> str:
    if path.suffix == ".parquet":
        return "parquet"
    if path.suffix != ".json":
        raise SemanticIdError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; set "
                              f"tokenizers.<name>.format to one of {FORMATS[1:]}")
    return "json"  # letter_index or json: told apart by the first value (_read_json)


def _read_json(path: Path, fmt: str) -> tuple[dict[str, list], str]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SemanticIdError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict) or not data:
        raise SemanticIdError(f"{path}: expected a JSON object {{item: codes}} with at least one item")
    first = next(iter(data.values()))
    if fmt == "json" and isinstance(first, list) and first and isinstance(first[0], str):
        fmt = "letter_index"
    return {str(key): _parse_codes(value, fmt, path, key) for key, value in data.items()}, fmt


def _parse_codes(value, fmt: str, path: Path, key) -> list[int]:
    if not isinstance(value, list) or not value:
        raise SemanticIdError(f"{path}: item {key!r}: expected a non-empty list of codes, got {value!r}")
    if fmt == "letter_index":
        codes = []
        for level, token in enumerate(value):
            match = _LETTER_TOKEN.match(token) if isinstance(token, str) else None
            if match is None or ord(match[1]) - ord("a") != level:
                raise SemanticIdError(f"{path}: item {key!r}: token {level + 1} is {token!r}; LETTER's index has "
                                      f"<{chr(ord('a') + level)}_N> there (level {level + 1})")
            codes.append(int(match[2]))
        return codes
    if not all(isinstance(c, int) and not isinstance(c, bool) for c in value):
        raise SemanticIdError(f"{path}: item {key!r}: codes must be integers, got {value!r}")
    return value


def _read_parquet(path: Path, key: str) -> dict[str, list]:
    table = pl.read_parquet(path)
    if key not in table.columns:
        raise SemanticIdError(f"{path}: no key column {key!r} (columns: {table.columns}); set tokenizers.<name>.key")
    keys = table[key].cast(pl.String).to_list()
    if "codes" in table.columns:
        values = table["codes"].to_list()
    else:
        levels = sorted((c for c in table.columns if re.fullmatch(r"c\d+", c)), key=lambda c: int(c[1:]))
        if not levels:
            raise SemanticIdError(f"{path}: no codes: expected a list column 'codes' or columns c1, c2, ... "
                                  f"(columns: {table.columns})")
        values = [list(row) for row in zip(*(table[c].to_list() for c in levels))]
    codes = {}
    for k, value in zip(keys, values):
        if k in codes:
            raise SemanticIdError(f"{path}: item {k!r} appears twice")
        if value is None or any(c is None for c in value):
            raise SemanticIdError(f"{path}: item {k!r}: missing codes ({value!r})")
        codes[k] = _parse_codes([int(c) for c in value], "json", path, k)
    return codes


def read_external_codes(path: str | Path, items: pl.DataFrame, *, fmt: str = "auto", key: str = "raw_item_id",
                        codebook_size: int = 0) -> tuple[np.ndarray, int, dict]:
    """The catalogue's codes from ``path``: ((N, L) int64 in item-id order, K, facts about the file).

    ``items`` is the filter stage's items table (``item_id``, ``raw_item_id``). ``codebook_size`` 0 takes one more
    than the largest code. Raises :class:`SemanticIdError` naming the item for a missing item, a depth other
    than the first item's, or a code outside [0, K)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise SemanticIdError(f"tokenizers.<name>.format must be one of {FORMATS}, got {fmt!r}")
    if key not in KEYS:
        raise SemanticIdError(f"tokenizers.<name>.key must be one of {KEYS}, got {key!r}")
    if not path.is_file():
        raise SemanticIdError(f"{path}: no such file (the semantic IDs this tokenizer block brings)")
    if fmt == "auto":
        fmt = _detect_format(path)
    by_key, fmt = (_read_parquet(path, key), fmt) if fmt == "parquet" else _read_json(path, fmt)
    items = items.sort("item_id")
    wanted = [str(k) for k in items[key].to_list()]
    missing = [k for k in wanted if k not in by_key]
    if missing:
        raise SemanticIdError(f"{path}: {len(missing):,} of the catalogue's {len(wanted):,} items have no codes, e.g. "
                              f"{key} {missing[:5]}; the file's first keys are {list(by_key)[:5]} (are they "
                              f"{'the pipeline ids' if key == 'raw_item_id' else 'the source ids'}? set "
                              f"tokenizers.<name>.key)")
    depth = len(by_key[wanted[0]])
    for k in wanted:
        if len(by_key[k]) != depth:
            raise SemanticIdError(f"{path}: item {k!r} has {len(by_key[k])} codes, item {wanted[0]!r} has {depth}: "
                                  "every item needs codes of one depth")
    codes = np.array([by_key[k] for k in wanted], dtype=np.int64).reshape(len(wanted), depth)
    K = int(codebook_size) or int(codes.max()) + 1
    bad = np.flatnonzero(((codes < 0) | (codes >= K)).any(axis=1))
    if len(bad):
        row = int(bad[0])
        raise SemanticIdError(f"{path}: item {wanted[row]!r} has codes {codes[row].tolist()}, outside [0, {K}) "
                              f"(tokenizers.<name>.codebook_size = {codebook_size}); {len(bad):,} item(s) in all")
    facts = {"format": fmt, "file_items": len(by_key), "ignored_items": len(by_key) - len(wanted)}
    return codes, K, facts


def write_codes(codes: np.ndarray, path: Path) -> None:
    from pipeline.io import write_parquet

    write_parquet(pl.DataFrame({"item_id": np.arange(len(codes), dtype=np.int32),
                                **{f"c{level + 1}": codes[:, level].astype(np.int32)
                                   for level in range(codes.shape[1])}}), path)
