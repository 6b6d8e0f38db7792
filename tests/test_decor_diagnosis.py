"""scripts/decor_diagnosis.py records `Decor.diagnose` of each training step's own batch while the shared trainer
trains, with `--set` in the `dvc exp run -S` syntax, and writes one CSV row per record."""
import csv
import subprocess
import sys
from pathlib import Path

from tests.conftest import TINY_T5, TINY_TRAIN

REPO = Path(__file__).resolve().parents[1]


def test_the_diagnosis_records_every_nth_training_step_of_a_tiny_decor(workspace, tmp_path):
    workspace.write_ids("rq", workspace.random_ids(), codebook_size=8, code_dim=32)
    workspace.params({"decor": {"model": "decor", "inputs": ["data/processed/semantic_ids/rq"],
                                "backbone": {**TINY_T5, "bos_queries": 2, "scores": "dot"},
                                "train": {**TINY_TRAIN, "batch_size": 16}}})
    out = tmp_path / "diagnosis.csv"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "decor_diagnosis.py"), "--steps", "6",
                             "--samples", "48", "--every", "2", "--out", str(out),
                             "--set", "methods.decor.backbone.scores=cosine",
                             "--set", "++methods.decor.backbone.temperature=0.5"],
                            cwd=workspace.root, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert [int(r["step"]) for r in rows] == [0, 2, 4]  # 3 steps an epoch, 2 epochs; validation not counted
    assert {"context_cos_mean", "l1_active_per_sample_rule", "l2_score_gap_top2"} <= set(rows[0])
    assert all(0.0 <= float(r["l1_max_mean"]) <= 1.0 for r in rows)
