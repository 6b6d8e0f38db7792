"""The report stage's own parts (stages/report.py): the budget line follows each method's training record, and the
slice chart is one SVG element with the same bytes in every process."""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from pipeline.config import load_params

REPO = Path(__file__).resolve().parents[1]
SVG = "{http://www.w3.org/2000/svg}"

SLICE_CHART_MD5 = """
import hashlib, json, sys
from stages.report import slices_chart
print(hashlib.md5(slices_chart(json.loads(sys.argv[1])).encode()).hexdigest())
"""


def slice_result() -> dict:
    """What ``compare_slices`` returns, cut to what the chart reads: two families, three methods, a missing cell."""
    cell = lambda v: {"ndcg@10": v, "users": 10}  # noqa: E731
    return {"families": {
        "popularity": {"title": "target popularity in the training split", "methods": {
            "popularity": {"head": cell(0.07), "torso": cell(0.0)},
            "tiger": {"head": cell(0.13), "torso": cell(0.023)},
            "decor <&>": {"head": cell(0.128), "torso": cell(0.028)}}},
        "prefix": {"title": "items sharing the target's first code", "methods": {
            "tiger": {"small": cell(0.038), "large": cell(0.033)},
            "decor <&>": {"small": cell(0.034)}}}}}


def test_the_budget_line_follows_the_training_record_not_the_model_name():
    """A record without epochs (what a model that fits itself writes) is a one-pass fit whatever the method is
    called; a record with epochs states the method's train block."""
    from stages.report import budget, training_budget

    params = load_params(REPO / "params.yaml")
    line = budget(params, {"popularity": {"epoch": 3, "best_epoch": 2}, "tiger": {}, "sasrec": None}, 1000)
    assert line.startswith("**Budget.** ") and line.endswith(".")
    groups = dict(group.split(": ", 1) for group in line.removeprefix("**Budget.** ")[:-1].split("; "))
    assert groups["tiger"] == "fitted on the training split in one pass (no epochs, no validation)"
    assert groups["popularity"].startswith("at most ") and groups["sasrec"].startswith("at most ")
    assert training_budget({}) == training_budget(None) == ""
    assert training_budget({"epoch": 8, "best_epoch": 7, "precision": "bf16"}) == "8 (best 7), bf16"


def test_the_slice_chart_is_one_svg_element_with_the_same_bytes_in_two_processes():
    import hashlib
    import json

    from stages.report import slices_chart

    chart = slices_chart(slice_result())
    assert chart.startswith("<svg")  # no XML declaration: the file and an inline copy are the same element
    root = ET.fromstring(chart)  # well-formed: the method name's "<&>" is escaped
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert {"popularity", "tiger", "decor <&>", "head", "torso", "small", "large"} <= set(texts)
    assert "NDCG@10 by target popularity in the training split" in texts
    assert not [p for p in root.iter(f"{SVG}path") if (p.get("id") or "").startswith("DejaVu")]  # no glyph outlines
    assert "dc:date" not in chart and "<metadata" not in chart
    digests = {subprocess.run([sys.executable, "-c", SLICE_CHART_MD5, json.dumps(slice_result())], cwd=REPO,
                              capture_output=True, text=True, check=True).stdout.strip() for _ in range(2)}
    assert digests == {hashlib.md5(chart.encode()).hexdigest()}  # this process and two fresh ones
