"""Every path the stages read or write, in one place (dvc.yaml names the same paths; a test keeps them equal).

Paths are relative to the repository root, where DVC runs the stages.
"""
from __future__ import annotations

from pathlib import Path

RAW = Path("data/raw")
SEQUENCES = Path("data/interim/sequences")
ITEMS = SEQUENCES / "items.parquet"
TEST_SPLIT = SEQUENCES / "test.parquet"
EMBEDDINGS_DIR = Path("data/processed/embeddings")
EMBEDDINGS = EMBEDDINGS_DIR / "embeddings.npy"
TOKENIZERS = Path("data/processed/tokenizers")  # tokenize@<t>: one trained tokenizer per folder
SEMANTIC_IDS = Path("data/processed/semantic_ids")  # semantic_ids@<t>: its item -> ID table
MODELS = Path("data/models")
RESULTS = Path("data/results")
METRICS = Path("reports/metrics")
PLOTS = Path("reports/plots")
COMPARISON = Path("reports/comparison.md")


def tokenizer_dir(name: str) -> Path:
    return TOKENIZERS / name


def semantic_ids_dir(name: str) -> Path:
    return SEMANTIC_IDS / name


def model_dir(method: str) -> Path:
    return MODELS / method


def results_dir(method: str) -> Path:
    return RESULTS / method


def tokenizer_of(path: str | Path) -> str | None:
    """``rqvae`` for ``data/processed/semantic_ids/rqvae``; None for a path that is no tokenizer's IDs."""
    path = Path(path)
    return path.name if path.parent == SEMANTIC_IDS else None
