"""Every path the stages read or write, in one place (dvc.yaml names the same paths; a test keeps them equal).

Paths are relative to the repository root, where DVC runs the stages.
"""
from __future__ import annotations

from pathlib import Path

CODE_DIGESTS_DIR = Path("data/code")  # code: one digest of the imported project files per stage
RAW_DIR = Path("data/raw")
SEQUENCES_DIR = Path("data/interim/sequences")
ITEMS = SEQUENCES_DIR / "items.parquet"
TEST_SPLIT = SEQUENCES_DIR / "test.parquet"
SEQUENCE_STATS = SEQUENCES_DIR / "stats.json"  # what the filter stage counted
EMBEDDINGS_DIR = Path("data/processed/embeddings")
EMBEDDINGS = EMBEDDINGS_DIR / "embeddings.npy"
TOKENIZERS_DIR = Path("data/processed/tokenizers")  # tokenize@<t>: one trained tokenizer per folder
SEMANTIC_IDS_DIR = Path("data/processed/semantic_ids")  # semantic_ids@<t>: its item -> ID table
MODELS_DIR = Path("data/models")
RESULTS_DIR = Path("data/results")
METRICS_DIR = Path("reports/metrics")
PLOTS_DIR = Path("reports/plots")
COMPARISON = Path("reports/comparison.md")
# Outside the DAG: scripts/seed_study.py's runs (one folder per study) and its reports; data.local.dir's default.
STUDIES_DIR = Path("data/studies")
STUDY_REPORTS_DIR = Path("reports/studies")
LOCAL_DIR = Path("data/local")


def tokenizer_dir(name: str) -> Path:
    return TOKENIZERS_DIR / name


def semantic_ids_dir(name: str) -> Path:
    return SEMANTIC_IDS_DIR / name


def model_dir(method: str) -> Path:
    return MODELS_DIR / method


def results_dir(method: str) -> Path:
    return RESULTS_DIR / method


def study_dir(name: str) -> Path:
    return STUDIES_DIR / name


def tokenizer_of(path: str | Path) -> str | None:
    """``rqvae`` for ``data/processed/semantic_ids/rqvae``; None for a path that is no tokenizer's IDs."""
    path = Path(path)
    return path.name if path.parent == SEMANTIC_IDS_DIR else None
