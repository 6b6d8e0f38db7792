"""Builds a method's model from its params block and the shared inputs (one place per idea: the
methods differ only in the model they build; data, trainer, decoder and evaluator are shared)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.config import ParamsError
from pipeline.models.base import Recommender

SEQUENCES = Path("data/interim/sequences")
SEMANTIC_IDS = Path("data/processed/semantic_ids")
GENERATIVE = {"tiger", "decor"}
KNOWN = GENERATIVE | {"sasrec", "popularity"}
# seed: this method's own training seed (defaults to the top-level seed), so that a seed study re-runs only
# the method (`dvc exp run -S methods.tiger.seed=1`) and not the tokenizer upstream.
BLOCK_KEYS = {"model", "input", "backbone", "train", "device", "seed"}


class MethodError(ParamsError):
    """A methods.<name> block of params.yaml that cannot be built."""


def check_block(name: str, block: dict) -> dict:
    if not isinstance(block, dict) or "model" not in block:
        raise MethodError(f"params.yaml: methods.{name} needs a 'model' key (one of {sorted(KNOWN)})")
    if block["model"] not in KNOWN:
        raise MethodError(f"params.yaml: methods.{name}.model = {block['model']!r}; known models: {sorted(KNOWN)}")
    unknown = set(block) - BLOCK_KEYS
    if unknown:
        raise MethodError(f"params.yaml: methods.{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(BLOCK_KEYS)}")
    return block


def load_item_codes(sid_dir: Path = SEMANTIC_IDS) -> tuple[torch.Tensor, int]:
    """(N, D) codes in item-id order and the codebook size K."""
    table = pq.read_table(sid_dir / "ids.parquet").sort_by("item_id")
    code_cols = [c for c in table.column_names if c != "item_id"]
    codes = torch.as_tensor(np.stack([table[c].to_numpy() for c in code_cols], axis=1).astype(np.int64))
    meta = json.loads((sid_dir / "meta.json").read_text())
    return codes, int(meta["codebook_size"])


def load_codebooks(sid_dir: Path = SEMANTIC_IDS) -> torch.Tensor:
    """(L, K, e) frozen RQ-VAE codebooks written by the semantic_ids stage (DECOR's semantic table)."""
    from safetensors.torch import load_file

    path = sid_dir / "codebooks.safetensors"
    if not path.exists():
        raise MethodError(f"{path}: not found; re-run the semantic_ids stage (dvc repro semantic_ids)")
    return load_file(str(path))["codebooks"]


def n_items(seq_dir: Path = SEQUENCES) -> int:
    return pq.ParquetFile(seq_dir / "items.parquet").metadata.num_rows


def build_model(name: str, block: dict, max_history: int, seq_dir: Path = SEQUENCES,
                sid_dir: Path = SEMANTIC_IDS) -> Recommender:
    block = check_block(name, block)
    kind = block["model"]
    backbone = dict(block.get("backbone") or {})
    if kind in GENERATIVE:
        from pipeline.models.decor import Decor, DecorConfig
        from pipeline.models.tiger import Tiger, TigerConfig

        codes, K = load_item_codes(sid_dir)
        config_cls = DecorConfig if kind == "decor" else TigerConfig
        try:
            config = config_cls.from_dict({"n_items": codes.shape[0], "depth": codes.shape[1], "codebook_size": K,
                                           "max_history": max_history, **backbone})
        except (TypeError, ValueError) as exc:
            raise MethodError(f"params.yaml: methods.{name}.backbone: {exc}") from None
        try:
            if kind == "tiger":
                return Tiger(config, codes)
            return Decor(config, codes, load_codebooks(sid_dir))
        except ValueError as exc:  # the semantic IDs themselves cannot drive the constrained decoder
            raise MethodError(f"{sid_dir}: {exc}; re-run the semantic_ids stage") from None
    if kind == "sasrec":
        from pipeline.models.sasrec import from_params

        try:
            return from_params({"max_len": max_history, **backbone}, n_items(seq_dir))
        except ValueError as exc:
            raise MethodError(f"params.yaml: methods.{name}.backbone: {exc}") from None
    from pipeline.models.popularity import MostPopular

    return MostPopular(n_items(seq_dir))


# The code that decides a trained model's weights: the code deps of dvc.yaml's `train` stage (a test keeps
# the two lists equal). It is part of the resume fingerprint, so a stage that DVC re-runs because this code
# changed trains from scratch instead of resuming the old code's finished run.
TRAINING_CODE = ("stages/train.py", "pipeline/experiment.py", "pipeline/methods.py", "pipeline/training.py",
                 "pipeline/recdata.py", "pipeline/models", "pipeline/decoding.py", "pipeline/metrics.py")
CODE_ROOT = Path(__file__).resolve().parent.parent


def code_digest(root: Path = CODE_ROOT, paths=TRAINING_CODE) -> str:
    """Hash of the Python sources under ``paths`` (relative names and bytes; caches such as .pyc excluded)."""
    h = hashlib.sha256()
    for rel in paths:
        p = root / rel
        files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
        if not files or not all(f.is_file() for f in files):
            raise FileNotFoundError(f"{p}: training code missing")
        for f in files:
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def fingerprint(*parts) -> str:
    """Hash of settings and input files: a checkpoint is resumed only by the run that wrote it."""
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, Path):
            for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
                if f.is_file():
                    h.update(f.name.encode())
                    h.update(f.read_bytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()
