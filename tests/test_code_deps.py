"""Each stage's code dependencies are derived from its imports and cannot drift from them.

The ``code`` stage hashes, per stage, the import closure of its module (``pipeline.code_deps``); every other
stage depends on its digest file and on no hand-listed code file. These tests check the closure against what
Python really imports, that editing one method's private code stales that method's stages and no other,
and that the resume fingerprint follows the same closure."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.code_deps import (
    PER_MODEL_STAGES,
    ROOT,
    all_stage_code,
    closure,
    code_digest,
    digest_file_name,
    imported_modules,
    model_module_file,
    module_file,
    stage_code,
    stage_names,
)
from pipeline.models.registry import MODELS, model_module

# Imports what a stage (and model) imports in a fresh interpreter and prints the project files Python loaded.
# Third-party libraries are loaded once, then each (stage, model) is imported in a fork of that process.
LOADED_FILES = textwrap.dedent('''
    import json, os, sys
    root, combos = sys.argv[1], json.loads(sys.argv[2])
    sys.path.insert(0, root)
    import numpy, polars, pyarrow, pyarrow.parquet, torch, transformers, safetensors, yaml, pydantic, \
mlflow, requests, tqdm
    result = {}
    for stage, module in combos:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            import importlib
            importlib.import_module("stages." + stage)
            if module:
                importlib.import_module(module)
            files = sorted(os.path.relpath(m.__file__, root) for m in list(sys.modules.values())
                           if getattr(m, "__file__", None) and os.path.abspath(m.__file__).startswith(root + os.sep)
                           and os.path.relpath(m.__file__, root).split(os.sep)[0] in ("pipeline", "stages"))
            os.write(w, json.dumps(files).encode()); os.close(w); os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 1 << 16):
            data += chunk
        os.waitpid(pid, 0)
        result[f"{stage}:{module}"] = json.loads(data)
    print(json.dumps(result))
''')


def loaded_files(combos: list[tuple[str, str | None]], root: Path = ROOT) -> dict[str, list[str]]:
    out = subprocess.run([sys.executable, "-c", LOADED_FILES, str(root), json.dumps(combos)], capture_output=True,
                         text=True, check=True, cwd=root)
    return json.loads(out.stdout)


def import_mismatches(root: Path = ROOT, stages: list[str] | None = None) -> dict[str, dict[str, list[str]]]:
    """Per (stage, model): project files Python loads that the closure misses, and closure files it never loads
    (for every stage, or those of ``stages``)."""
    cases = [(stage, model) for stage in (stages or stage_names(root))
             for model in (sorted(MODELS) if stage in PER_MODEL_STAGES else [None])]
    real = loaded_files([(stage, model and model_module(model, "model")) for stage, model in cases], root)
    bad = {}
    for stage, model in cases:
        derived = {f for f in stage_code(stage, model, root) if f.endswith(".py")}  # (templates: no imports)
        python = set(real[f"{stage}:{model and model_module(model, 'model')}"])
        if derived != python:
            bad[f"{stage}:{model}"] = {"imported but not a dep": sorted(python - derived),
                                       "a dep but never imported": sorted(derived - python)}
    return bad


def test_every_stage_depends_on_its_code_digest_and_on_no_code_file():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages["code"]["deps"] == ["pipeline", "stages"]
    assert set(stages) - {"code"} == set(stage_names()), "a stage module without a stage, or the reverse"
    for name, stage in stages.items():
        if name == "code":
            continue
        deps = (stage.get("do") or stage)["deps"]
        code_files = [d for d in deps if d.startswith(("pipeline/", "stages/"))]
        assert not code_files, f"{name}: hand-listed code deps {code_files}; the code stage derives them"
        expected = (f"data/code/{name}_${{item.model}}.sha256" if name in PER_MODEL_STAGES
                    else f"data/code/{name}.sha256")
        assert expected in deps, f"{name}: its code digest {expected} is not among its deps {deps}"


def test_the_derived_closure_is_exactly_what_python_imports_for_every_stage_and_model():
    """The deps-vs-imports check: a project file a stage imports that its digest does not cover, or a digest
    file that the stage never imports, fails here (a dynamic import, an import the scan misses)."""
    assert import_mismatches() == {}


def test_the_explorers_templates_are_in_the_explore_digest_alone():
    templates = {f for f in stage_code("explore") if not f.endswith(".py")}
    assert templates and all(f.startswith("pipeline/analysis/templates/") for f in templates), templates
    assert all(f.endswith(".py") for s in stage_names() if s != "explore" for f in stage_code(s, "tiger"))


def test_the_check_sees_an_import_that_the_scan_cannot(tmp_path):
    """The check itself: a stage that loads a module by name at import time (no import statement) is caught."""
    shutil.copytree(ROOT / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    report = tmp_path / "stages" / "report.py"
    report.write_text('__import__("pipeline.models.tiger.decoding")\n' + report.read_text())
    bad = import_mismatches(tmp_path, stages=["report", "explore"])
    assert set(bad) == {"report:None"}
    assert {"pipeline/models/tiger/__init__.py", "pipeline/models/tiger/decoding.py"} <= set(
        bad["report:None"]["imported but not a dep"])


def stage_deps(params: dict, workdir: Path) -> dict[str, list[str]]:
    """Stage name -> deps, resolved by DVC itself from dvc.yaml and ``params``."""
    from dvc.repo import Repo

    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "dvc.yaml", workdir / "dvc.yaml")
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    Repo.init(str(workdir), no_scm=True, force=True)
    with Repo(str(workdir)) as repo:
        return {s.addressing.split(":")[-1]: [d.def_path for d in s.deps] for s in repo.index.stages}


def stales_after_edit(tmp_path: Path, edit: str, methods: dict) -> set[str]:
    """The stages whose code digest changes when ``edit`` (a project file) gains a line."""
    code = tmp_path / "code"
    for folder in ("pipeline", "stages"):
        shutil.copytree(ROOT / folder, code / folder, ignore=shutil.ignore_patterns("__pycache__"))
    before = {name: code_digest(files, code) for name, files in all_stage_code(code).items()}
    target = code / edit
    target.write_text(target.read_text() + "\n# an edit\n")
    after = {name: code_digest(files, code) for name, files in all_stage_code(code).items()}
    changed = {f"data/code/{name}" for name in before if before[name] != after[name]}
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["methods"] = methods
    deps = stage_deps(params, tmp_path / "dvc")
    return {stage for stage, paths in deps.items() if changed & set(paths)}


def every_method() -> dict:
    """Every method block as a default-run block (its settings resolved, extending its family's defaults)."""
    from pipeline.config import resolve_extends

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    resolved = resolve_extends(raw)
    every = {**raw["methods"], **raw["more_methods"]}

    def root(name: str) -> str:
        parent = every[name]["extends"]
        return parent if parent.startswith("defaults.") else root(parent.split(".")[1])

    family = {name: root(name) for name in raw["methods"]}
    roots = {name: root(name) for name in raw["more_methods"]}
    return {**{n: {**b, "extends": family[n]} for n, b in resolved["methods"].items()},
            **{n: {**b, "extends": roots[n]} for n, b in resolved["more_methods"].items()}}


def test_editing_discrecs_mask_stales_exactly_discrecs_train_and_evaluate_stages(tmp_path):
    methods = every_method()
    discrec = sorted(name for name, block in methods.items() if block["model"] == "discrec")
    assert discrec, "no DiscRec block in params.yaml"
    stale = stales_after_edit(tmp_path, "pipeline/models/discrec/locality.py", methods)
    assert stale == {f"{s}@{name}" for name in discrec for s in ("train", "evaluate")}


def test_editing_the_metric_code_stales_every_evaluation_and_the_report(tmp_path):
    methods = every_method()
    stale = stales_after_edit(tmp_path, "pipeline/evaluation/metrics.py", methods)
    # training selects its weights on validation NDCG, so every train stage runs the metric code too
    assert stale == {f"{s}@{name}" for name in methods for s in ("train", "evaluate")} | {"report"}


def test_the_popularity_baseline_runs_no_t5_code():
    for stage in PER_MODEL_STAGES:
        files = stage_code(stage, "popularity")
        assert "pipeline/models/popularity.py" in files
        assert not [f for f in files if f.startswith(("pipeline/models/tiger", "pipeline/models/decor",
                                                      "pipeline/models/sasrec"))], files


@pytest.mark.parametrize("model", sorted(MODELS))
def test_the_resume_fingerprint_hashes_the_train_stage_closure(tmp_path, model):
    """A stage that DVC re-runs because its code changed trains from scratch instead of resuming the old
    code's finished run: the fingerprint's code digest is the train stage's closure, caches excluded."""
    from pipeline.training.fingerprint import training_code_digest

    files = stage_code("train", model)
    assert training_code_digest(model) == code_digest(files)
    assert not [f for f in files if not f.endswith(".py")]
    for folder in ("pipeline", "stages"):
        shutil.copytree(ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "pipeline/models/__pycache__").mkdir(exist_ok=True)
    (tmp_path / "pipeline/models/__pycache__/base.cpython-311.pyc").write_bytes(b"\0compiled")
    before = code_digest(stage_code("train", model, tmp_path), tmp_path)
    assert before == training_code_digest(model)
    model_file = model_module_file(model, tmp_path)
    model_file.write_text(model_file.read_text() + "\n# an edit\n")
    assert code_digest(stage_code("train", model, tmp_path), tmp_path) != before


def test_the_code_stage_writes_one_digest_per_stage_and_model():
    names = set(all_stage_code())
    expected = {digest_file_name(s, m) for s in stage_names()
                for m in (sorted(MODELS) if s in PER_MODEL_STAGES else [None])}
    assert names == expected
    assert closure([ROOT / "stages" / "code.py"])  # the code stage itself imports only what it needs


def concern(path: str) -> str:
    """The package a project file belongs to: pipeline/<package>/..., or the top-level module's name."""
    parts = path.split("/")
    return parts[1].removesuffix(".py") if parts[0] == "pipeline" else parts[0]


def test_data_flows_one_way_between_the_packages():
    """No two packages import each other, directly or through others (the layout's promise: a newcomer
    knows from the tree what a change may touch)."""
    edges: dict[str, set[str]] = {}
    for path in sorted(ROOT.glob("pipeline/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for name in imported_modules(path):
            target = module_file(name).relative_to(ROOT).as_posix()
            if concern(target) not in (concern(rel), "__init__"):
                edges.setdefault(concern(rel), set()).add(concern(target))

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in edges.get(start, ()))

    cycles = sorted(f"{a} -> {b} -> ... -> {a}" for a in edges for b in edges[a] if reaches(b, a, {b}))
    assert not cycles, f"packages that import each other: {cycles}; edges: { {k: sorted(v) for k, v in edges.items()} }"
