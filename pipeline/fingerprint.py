"""Hashes that decide whether an interrupted training may be resumed: settings, inputs and training code."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

# The code that decides a trained model's weights: the code deps of dvc.yaml's `train` stage (a test keeps
# the two lists equal). It is part of the resume fingerprint, so a stage that DVC re-runs because this code
# changed trains from scratch instead of resuming the old code's finished run.
TRAINING_CODE = ("stages/train.py", "pipeline/experiment.py", "pipeline/model_folder.py", "pipeline/training.py",
                 "pipeline/ranking.py", "pipeline/precision.py", "pipeline/recdata.py", "pipeline/models",
                 "pipeline/decoding.py", "pipeline/metrics.py", "pipeline/fingerprint.py", "pipeline/semantic_ids.py",
                 "pipeline/train_settings.py", "pipeline/reproducible.py", "pipeline/distributed.py",
                 "pipeline/devices.py", "pipeline/rqvae.py", "pipeline/tokenizers.py", "pipeline/alignment.py")
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
