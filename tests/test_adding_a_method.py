"""docs/adding_a_method.md's example, run as written through the train and evaluate stages."""
import json
import re
import sys
import types
from pathlib import Path

import pytest
import yaml

from pipeline.models import registry

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "adding_a_method.md"


def guide_example() -> tuple[str, dict, str]:
    """The guide's model file, its params block and its registry entry."""
    text = GUIDE.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    block = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    entry = re.search(r'"bigram": "([\w.:]+)"', text).group(1)
    return code, block, entry


def test_the_guide_example_trains_and_evaluates_through_the_stages(workspace, monkeypatch):
    code, block, entry = guide_example()
    assert entry == "pipeline.models.bigram:Bigram"
    module = types.ModuleType("pipeline.models.bigram")
    exec(compile(code, "docs/adding_a_method.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "pipeline.models.bigram", module)
    monkeypatch.setitem(registry.MODELS, "bigram", entry)
    workspace.params(block["methods"])

    from stages import evaluate, train

    train.main("bigram")
    evaluate.main("bigram")
    trained = json.loads(Path("reports/metrics/train_bigram.json").read_text())
    result = json.loads(Path("reports/metrics/evaluate_bigram.json").read_text())
    info = json.loads(Path("data/models/bigram/model.json").read_text())
    assert info["model"] == "bigram" and info["config"]["dim"] == 32
    assert result["users"] == 40 and trained["best_epoch"] >= 1
    # The workspace's next item is a function of the last one: a bigram model that trained learns it.
    assert result["recall@10"] > 0.9, result
    assert Path("reports/plots/train_bigram.csv").read_text().count("\n") == trained["epochs_run"] + 1


def test_an_unregistered_model_name_is_refused_naming_the_block(workspace):
    from pipeline.config import ParamsError
    from stages import train

    workspace.params({"mine": {"model": "bigrm", "inputs": ["data/interim/sequences"]}})
    with pytest.raises(ParamsError, match=r"methods.mine.model = 'bigrm'; known models: .*'tiger'"):
        train.main("mine")
