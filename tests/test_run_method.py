"""scripts/run_method.py trains and evaluates one method by the library's path (pipeline.training.standalone) on a
workspace, with `--set` in the `dvc exp run -S` syntax, and writes the result JSON."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TINY_T5, TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]


def test_a_method_trained_and_evaluated_outside_dvc_writes_its_result_with_the_overrides(workspace, tmp_path):
    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8)
    raw = {"methods": {"tiger": {"model": "tiger", "inputs": ["data/processed/semantic_ids/rq"], "backbone": TINY_T5,
                                 "train": TINY_TRAIN}},
           "tokenizers": {"rq": {"model": "rqvae"}}}
    (workspace.root / "params.yaml").write_text(yaml.safe_dump(raw))
    report = tmp_path / "out" / "tiger.json"
    overrides = ["methods.tiger.train.epochs=1", "++methods.tiger.seed=4"]
    subprocess.run([sys.executable, str(REPO / "scripts" / "run_method.py"), "--workspace", str(workspace.root),
                    "--method", "tiger", "--report", str(report), *[a for o in overrides for a in ("--set", o)]],
                   check=True, capture_output=True, text=True, timeout=300)
    result = json.loads(report.read_text())
    assert result["method"] == "tiger" and result["overrides"] == overrides
    assert result["summary"]["epochs_run"] == 1 and len(result["history"]) == 1
    assert result["test"]["users"] == 40 and result["train_seconds"] >= 0
    assert (workspace.root / "data" / "models" / "tiger" / "model.json").exists()
    assert (workspace.root / "data" / "results" / "tiger").is_dir()
