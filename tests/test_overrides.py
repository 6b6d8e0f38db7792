"""One override syntax for the scripts: `--set` takes params.yaml keys from the top, in the grammar of
`dvc exp run -S` (Hydra's: `key=value` sets a key the file has, `+key=value` adds one, `++key=value` either), through
`pipeline.config.set_dotted` / `apply_overrides`. Checked against DVC's own override code on the project's
params.yaml, and through the scripts that take `--set`."""
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ParamsError, apply_overrides, params_from_dict, set_dotted

REPO = Path(__file__).resolve().parents[1]
ASSIGNMENTS = [
    "defaults.generative.train.epochs=2",  # a family's key: every method that extends it
    "methods.sasrec.train.epochs=3",  # a key of a method's own block
    "++methods.tiger.train.lr=1e-3",  # a key the block takes from its family: `++` adds it
    "+methods.tiger.train.epochs=4",
    "++methods.tiger.seed=7",  # `++` on a key the block has
    "methods.decor.backbone.scores=dot",
    "methods.etegrec.backbone.tokenizer_lr=1e-4",  # Hydra reads 1e-4 as a float (YAML 1.1 as a string)
    "embed.model=sentence-transformers/sentence-t5-base",
    "data.local.name=",
    "methods.tiger.train.lr=0.001",  # refused: methods.tiger has no train block of its own
    "defaults.generative.train.epoch=2",  # refused: a misspelt key
    "+methods.tiger.seed=1",  # `+` fills a null key
    "+methods.sasrec.train.epochs=3",  # refused: `+` on a key the file has
]


def dvc_applies(path: Path, assignment: str) -> dict | None:
    """params.yaml after DVC's own `-S` code applied ``assignment``; None where DVC refuses it."""
    from dvc.exceptions import InvalidArgumentError
    from dvc.utils.hydra import apply_overrides as dvc_apply

    shutil.copy(REPO / "params.yaml", path)
    try:
        dvc_apply(str(path), [assignment])
    except InvalidArgumentError:
        return None
    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_an_assignment_does_what_dvc_exp_run_set_param_does_or_is_refused_as_dvc_refuses_it(assignment, tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    expected = dvc_applies(tmp_path / "params.yaml", assignment)
    if expected is None:
        with pytest.raises(ParamsError) as refused:
            apply_overrides(raw, [assignment])
        message = str(refused.value)
        assert "\n" not in message and assignment in message, message
    else:
        assert apply_overrides(raw, [assignment]) == expected


def test_a_missing_key_is_named_with_the_assignment_that_would_add_it():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    with pytest.raises(ParamsError, match=r"has no key methods\.tiger\.train; add one with "
                                          r"'\+\+methods\.tiger\.train\.lr=0\.001'"):
        set_dotted(raw, "methods.tiger.train.lr=0.001")
    with pytest.raises(ParamsError, match="methods.sasrec.train.epochs is a value, not a mapping"):
        set_dotted(raw, "++methods.sasrec.train.epochs.x=1")
    with pytest.raises(ParamsError, match="expected KEY=VALUE"):
        set_dotted(raw, "methods.tiger.seed")


def test_overrides_leave_the_mapping_they_are_given_and_reach_every_block_of_a_family():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    before = yaml.safe_dump(raw)
    params = params_from_dict(apply_overrides(raw, ["defaults.generative.train.epochs=2",
                                                    "++methods.tiger.train.epochs=5"]))
    assert yaml.safe_dump(raw) == before
    assert params.method("tiger").train.epochs == 5
    assert params.method("decor").train.epochs == params.method("decor_composition").train.epochs == 2
    assert params.method("sasrec").train.epochs == raw["methods"]["sasrec"]["train"]["epochs"]  # not generative


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_seed_study_sets_root_keys_and_each_runs_seed_and_refuses_a_bad_key_before_any_run():
    seed_study = load_script("seed_study")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    runs = seed_study.run_params(raw, ["tiger", "decor_composition"], [1, 2], ["defaults.generative.train.epochs=2"])
    assert set(runs) == {("tiger", 1), ("tiger", 2), ("decor_composition", 1), ("decor_composition", 2)}
    for (method, seed), run in runs.items():
        params = params_from_dict(run)
        assert params.method_seed(method) == seed and params.method(method).train.epochs == 2
    with pytest.raises(ParamsError, match="train.epochs=2': params.yaml has no key methods.tiger.train"):
        seed_study.run_params(raw, ["tiger"], [1], ["methods.tiger.train.epochs=2"])


@pytest.mark.parametrize("script, args", [
    ("run_method.py", ["--method", "tiger", "--report", "out.json"]),
    ("seed_study.py", ["--name", "s", "--methods", "tiger", "--baseline", "tiger", "--seeds", "1"]),
    ("etegrec_id_churn.py", ["--variant", "a:methods.etegrec.backbone.tokenizer_lrr=0"]),
])
def test_a_script_stops_on_a_bad_key_with_one_line_naming_it(script, args, tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    bad = [] if script == "etegrec_id_churn.py" else ["--set", "methods.tiger.train.epochs=2"]
    result = subprocess.run([sys.executable, str(REPO / "scripts" / script), "--workspace", str(tmp_path), *args, *bad],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script.removesuffix('.py')}: error: ") and "params.yaml has no key" in last, result.stderr
    assert "Traceback" not in result.stderr
