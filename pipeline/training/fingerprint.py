"""Hashes that decide whether an interrupted training may be resumed: settings, inputs and training code."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pipeline.code_deps import code_digest, stage_code


def training_code_digest(model: str) -> str:
    """Hash of the code ``train@<method>`` runs for registry model ``model`` (the stage's import closure,
    ``pipeline.code_deps``): a stage that DVC re-runs because this code changed trains from scratch instead
    of resuming the old code's finished run."""
    return code_digest(stage_code("train", model))


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
