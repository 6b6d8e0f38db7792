"""A training stage that DVC re-runs because its code changed must train again, not resume the old run."""
import shutil
from pathlib import Path

import yaml

from pipeline.training.fingerprint import CODE_ROOT, TRAINING_CODE, code_digest


def copy_training_code(dest: Path) -> None:
    for rel in TRAINING_CODE:
        src, dst = CODE_ROOT / rel, dest / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)


def test_the_digest_follows_the_training_sources_and_ignores_caches(tmp_path):
    copy_training_code(tmp_path)
    before = code_digest(tmp_path)
    assert code_digest(tmp_path) == before
    (tmp_path / "pipeline/models/__pycache__").mkdir(exist_ok=True)
    (tmp_path / "pipeline/models/__pycache__/tiger.cpython-311.pyc").write_bytes(b"\0compiled")
    assert code_digest(tmp_path) == before  # compiled caches come and go with the interpreter
    decoder = tmp_path / "pipeline/models/tiger/model.py"
    decoder.write_text(decoder.read_text() + "\n# an edit\n")
    assert code_digest(tmp_path) != before


def test_the_digest_covers_exactly_the_code_deps_of_the_train_stage():
    """Each train@ stage names the shared model files and its own (``${item.model}.py``); the resume digest
    covers the whole models folder: together, over every registered model, the same files."""
    from pipeline.models.registry import MODELS

    stage = yaml.safe_load((CODE_ROOT / "dvc.yaml").read_text())["stages"]["train"]["do"]
    code_deps = [d for d in stage["deps"] if not d.startswith(("data/", "${item.inputs"))]
    deps = {d for d in code_deps if "$" not in d}
    deps |= {d.replace("${item.model}", name) for d in code_deps if "${item.model}" in d for name in MODELS}
    covered = set()
    for entry in TRAINING_CODE:
        path = CODE_ROOT / entry
        covered |= ({f.relative_to(CODE_ROOT).as_posix() for f in path.rglob("*.py") if "__pycache__" not in f.parts}
                    if path.is_dir() else {entry})
    assert deps == covered
