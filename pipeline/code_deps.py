"""The project code each stage runs: the import closure of its module, hashed into one digest per stage.

A stage's code is its module under ``stages/`` and every project module it imports, directly or through
others; for ``train@`` and ``evaluate@`` also the module of the method's model (the registry imports a
model only when asked for it, so a stage runs its own method's code and no other). The ``code`` stage of
dvc.yaml writes one digest file per stage (per model for train and evaluate) into ``data/code``, and each
stage depends on its digest file instead of a hand-kept list of files: an edit re-runs exactly the stages
whose code it changes, and an added import is covered the moment it is written. The resume fingerprint of
a training (``pipeline.training.fingerprint``) hashes the same closure.

Every ``import`` statement of a file counts, at module level or inside a function (the scan reads the
whole syntax tree); a module loaded by name at run time does not, which is why the method's model module is
added per stage here (tests/test_code_deps.py checks the closure against what Python really loads).
"""
from __future__ import annotations

import ast
import hashlib
from pathlib import Path

from pipeline.models.registry import MODELS, model_module

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "stages")
# Stages whose code depends on the method's model: one digest per registry model.
PER_MODEL_STAGES = ("train", "evaluate")


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """The file of project module ``name`` (``pipeline.models.tiger`` -> its ``__init__.py``), or None."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path, root: Path = ROOT) -> set[str]:
    """The project modules ``path`` imports (``from pkg import submodule`` names the submodule)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if module_file(n, root) is not None}


def closure(start: list[Path], root: Path = ROOT) -> list[str]:
    """Every project file that importing ``start`` executes: the files, what they import, transitively, and
    the ``__init__.py`` of each package on the way. Sorted repository-relative paths."""
    seen: set[Path] = set()
    todo = [p.resolve() for p in start]
    for p in start:  # `python -m stages.train` runs stages/__init__.py first
        rel = p.resolve().relative_to(root.resolve()).with_suffix("")
        todo += [found.resolve() for i in range(1, len(rel.parts))
                 if (found := module_file(".".join(rel.parts[:i]), root)) is not None]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path, root):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__, a/b/__init__, then a/b/c
                found = module_file(".".join(parts[:i]), root)
                if found is not None and found.resolve() not in seen:
                    todo.append(found.resolve())
    return sorted(p.relative_to(root.resolve()).as_posix() for p in seen)


def model_module_file(model: str, root: Path = ROOT) -> Path | None:
    """The file of registry model ``model`` (``pipeline.models.registry.MODELS``); None for a model whose
    module is not a file of this repository (an installed package's code is not the project's to hash)."""
    return module_file(model_module(model, "model"), root)


def template_files(modules: list[str], root: Path = ROOT) -> list[str]:
    """The files a module reads as code at run time: those of the folder it names in a module-level
    ``TEMPLATE_FOLDER = "<folder beside it>"`` (the explorer's Jinja2 templates)."""
    found = set()
    for module in modules:
        for node in ast.parse((root / module).read_text()).body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "TEMPLATE_FOLDER"
                                                     for t in node.targets)
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                folder = (root / module).parent / node.value.value
                found.update(f.relative_to(root).as_posix() for f in folder.rglob("*") if f.is_file())
    return sorted(found)


def stage_code(stage: str, model: str | None = None, root: Path = ROOT) -> list[str]:
    """The project files stage ``stage`` runs (for train/evaluate: with model ``model``): its modules' import
    closure and the templates they read."""
    start = [root / "stages" / f"{stage}.py"]
    if model is not None and (module := model_module_file(model, root)) is not None:
        start.append(module)
    modules = closure(start, root)
    return sorted(set(modules) | set(template_files(modules, root)))


def digest_text(files: list[str], root: Path = ROOT) -> str:
    """A digest file's body: ``sha256  path`` per file, so that a diff shows which file moved a stage."""
    return "".join(f"{hashlib.sha256((root / f).read_bytes()).hexdigest()}  {f}\n" for f in files)


def code_digest(files: list[str], root: Path = ROOT) -> str:
    """One hash of the files' relative names and bytes."""
    h = hashlib.sha256()
    for f in files:
        h.update(f.encode())
        h.update((root / f).read_bytes())
    return h.hexdigest()


def stage_names(root: Path = ROOT) -> list[str]:
    return sorted(p.stem for p in (root / "stages").glob("*.py") if p.stem not in ("__init__", "code"))


def digest_file_name(stage: str, model: str | None = None) -> str:
    return f"{stage}_{model}.sha256" if model else f"{stage}.sha256"


def all_stage_code(root: Path = ROOT) -> dict[str, list[str]]:
    """Digest file name -> the files it covers, for every stage module (train/evaluate: every model)."""
    out = {}
    for stage in stage_names(root):
        for model in (sorted(MODELS) if stage in PER_MODEL_STAGES else [None]):
            out[digest_file_name(stage, model)] = stage_code(stage, model, root)
    return out
