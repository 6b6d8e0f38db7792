"""scripts/paper_settings.py: the papers' sizes and budgets as `dvc exp run -S` assignments. A backbone key must be
one the default params.yaml already has (backbones are checked only when a model is built, so a typo would pass
here); train and embed keys are checked by the strict params models; the result validates."""
import sys
from pathlib import Path

import yaml

from pipeline.config import params_from_dict, set_dotted

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import paper_settings  # noqa: E402


def has_key(raw: dict, dotted: str) -> bool:
    node = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_every_assignment_names_an_existing_key_of_a_default_method_and_validates():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assignments = paper_settings.overrides(encoder=True)
    assert {a.split(".")[1] for a in assignments if a.startswith("methods.")} == set(raw["methods"]) - {"popularity"}
    for assignment in assignments:
        key = assignment.split("=", 1)[0]
        assert ".backbone." not in key or has_key(raw, key), f"{key}: not a key of params.yaml"
        set_dotted(raw, assignment)
    params = params_from_dict(raw)
    assert params.method("tiger").backbone["num_layers"] == 4 and params.method("etegrec").backbone["num_layers"] == 6
    assert params.method("decor").train.epochs == 200 and params.method("decor").train.max_eval_samples == 0
    assert params.method("decor").backbone["fusion"] is True  # the method's own switches are kept
    assert params.embed.model == paper_settings.ENCODER


def test_the_command_is_one_named_dvc_experiment():
    cmd = paper_settings.command()
    assert cmd[:5] == ["dvc", "exp", "run", "-n", "paper-settings"] and cmd.count("-S") == len(paper_settings.overrides())
