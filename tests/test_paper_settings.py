"""scripts/paper_settings.py: the papers' sizes and budgets as `dvc exp run -S` assignments: each sets a key that
params.yaml has or adds one (`++`) to a method's block; the result validates and holds the papers' sizes.
tests/test_dvc_set_param.py runs them through the real `dvc exp run -S`."""
import sys
from pathlib import Path

import yaml

from pipeline.config import params_from_dict, set_dotted

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import paper_settings  # noqa: E402


def test_every_assignment_sets_an_existing_key_or_adds_one_to_a_method_and_validates():
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assignments = paper_settings.overrides(encoder=True)
    for assignment in assignments:
        key = assignment.split("=", 1)[0]
        assert paper_settings.has_key(raw, key) or (key.startswith("++methods.") and ".backbone." not in key[2:]
                                                     or key.startswith("++methods.sasrec.train.")
                                                     or key.startswith("++methods.etegrec.backbone.")), key
        set_dotted(raw, assignment)  # as `dvc exp run -S` takes it: a plain key must exist, `++` adds one
    params = params_from_dict(raw)
    assert params.method("tiger").backbone["num_layers"] == 4 and params.method("etegrec").backbone["num_layers"] == 6
    assert params.method("letter").backbone["d_ff"] == 1024 and params.method("discrec_l").backbone["branch_ff"] == 1024
    assert params.method("decor").train.epochs == 200 and params.method("decor").train.max_eval_samples == 0
    assert params.method("sasrec").train.epochs == 200 and params.method("sasrec").train.max_eval_samples == 0
    assert params.method("decor").backbone["fusion"] is True  # the method's own switches are kept
    assert params.method("etegrec").backbone["d_ff"] == 512  # ETEGRec §5.5, not TIGER's 1024
    assert params.embed.model == paper_settings.ENCODER


def test_the_command_is_one_named_dvc_experiment():
    cmd = paper_settings.command()
    assert (cmd[:5] == ["dvc", "exp", "run", "-n", "paper-settings"]
            and cmd.count("-S") == len(paper_settings.overrides()))
