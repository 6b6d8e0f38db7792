"""The charts of the report and the explorer (pipeline/analysis/svg.py): one vector SVG element each, its text as
text (escaped), its id the one asked for."""
import xml.etree.ElementTree as ET

import numpy as np

from pipeline.analysis import svg

NS = "{http://www.w3.org/2000/svg}"


def texts(chart: str) -> list[str]:
    return [t.text for t in ET.fromstring(chart).iter(f"{NS}text")]


def test_a_heat_map_and_its_scale_stay_vector():
    """Nothing rasterised (an embedded PNG's bytes would hang on the compression library): matplotlib rasterises a
    colour bar of 50 shades or more, so the heat map's scale has fewer."""
    values = np.random.default_rng(0).random((24, 16))
    chart = svg.heatmap(values.tolist(), [f"user {u}" for u in range(24)], [str(c) for c in range(16)],
                        title="weights <top>", element_id="composition-users-l1")
    root = ET.fromstring(chart)
    assert root.get("id") == "composition-users-l1" and "<image" not in chart
    assert {"user 0", "user 23", "0", "15", "weights <top>"} <= set(texts(chart))


def test_few_bars_carry_their_values_and_many_bars_are_one_outline():
    few = svg.bars([3, 5, 0], ["a", "b", "c"], title="t", element_id="few")
    assert {"3", "5", "0", "a", "b", "c"} <= set(texts(few))
    many = svg.bars(np.arange(256) % 7, [f"code {c}" for c in range(256)], element_id="many")
    assert {"code 0", "code 255"} <= set(texts(many)) and "code 1" not in texts(many)
    # the bars, axes background and spines: a handful of paths, not one per code
    assert sum(1 for _ in ET.fromstring(many).iter(f"{NS}path")) < 20
