"""The semantic-ID explorer (stages/explore.py, pipeline/analysis/explorer.py): its figures on hand-checked cases,
and its pages opened in headless Chromium, without errors, showing the numbers the semantic_ids stage writes."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from pipeline.analysis import explorer
from pipeline.models.folder import FORMAT
from pipeline.tokenizers.semantic_ids import assign_collision_tokens, semantic_id_stats, write_id_table

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("explorer_screenshot", REPO / "scripts" / "explorer_screenshot.py")
shot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shot)
HAS_BROWSER = shot.find_chromium() is not None and importlib.util.find_spec("playwright") is not None


def test_neighbour_agreement_counts_shared_prefixes_against_chance():
    codes = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    neighbours = np.array([[1], [0], [0], [2]])  # item 2's neighbour (0) is in another first-level group
    levels = explorer.neighbour_agreement(codes, neighbours)
    assert levels[0] == {"prefix": 1, "share": 0.75, "chance": pytest.approx(1 / 3)}  # groups of 2: 1 of 3 others
    assert levels[1]["share"] == 0.0 and levels[1]["chance"] == 0.0


def test_pair_agreement_ignores_how_codes_are_numbered():
    a = np.array([0, 0, 1, 1, 2])
    assert explorer.pair_agreement(a, np.array([5, 5, 7, 7, 9])) == 1.0  # the same partition, renumbered
    assert explorer.pair_agreement(a, np.array([5, 6, 7, 7, 7])) == 0.5  # pair (0,1) split, (2,3) kept


def test_sasrec_neighbours_exclude_the_item_itself():
    e = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    assert explorer.sasrec_neighbours(e, k=1)[:, 0].tolist() == [1, 0, 3, 2]


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A repository-shaped folder: items, one tokenizer's IDs (with collisions), a SASRec export, a model that
    learned its own IDs from that tokenizer, and one that copied them."""
    rng = np.random.default_rng(0)
    n, K = 60, 8
    codes = rng.integers(0, K, size=(n, 2))
    codes[5] = codes[4]  # a collision group
    ids = assign_collision_tokens(codes, K)
    monkeypatch.chdir(tmp_path)
    seq = Path("data/interim/sequences")
    seq.mkdir(parents=True)
    pl.DataFrame({"item_id": np.arange(n, dtype=np.int32), "raw_item_id": [f"r{i}" for i in range(n)],
                  "title": [f"Item <{i}> & </script>" for i in range(n)]}).write_parquet(seq / "items.parquet")
    tok = Path("data/processed/semantic_ids/toy")
    tok.mkdir(parents=True)
    write_id_table(ids, tok / "ids.parquet")
    (tok / "meta.json").write_text(json.dumps({"codebook_size": K, "levels": 2, "depth": 3}))
    stats = semantic_id_stats(ids[:, :2], ids, K)  # what semantic_ids@toy writes to reports/metrics
    sasrec = Path("data/models/sasrec")
    sasrec.mkdir(parents=True)
    # model folders as pipeline.models.folder writes them (format, model, config, inputs, catalogue)
    info = {"format": FORMAT, "catalogue": {}}
    (sasrec / "model.json").write_text(json.dumps({**info, "model": "sasrec", "config": {}, "inputs": []}))
    save_file({"item_embeddings": torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32))},
              str(sasrec / "item_embeddings.safetensors"))
    for name, table in (("learner", np.roll(ids, 1, axis=0)), ("copier", ids)):
        folder = Path("data/models") / name
        folder.mkdir()
        (folder / "model.json").write_text(json.dumps({**info, "model": "tiger", "config": {"codebook_size": K},
                                                       "inputs": [str(tok), "data/processed/tokenizers/toy"]}))
        write_id_table(table, folder / "semantic_ids.parquet")
    return {"stats": stats, "ids": ids}


def test_explore_writes_a_page_per_id_table_and_shows_the_stage_numbers(workspace):
    from stages import explore

    models = Path("data/models")
    summaries = explore.explore(Path("reports/explorer"), ["toy"], learned=[models / "learner", models / "copier"],
                                neighbours_from=models / "sasrec" / "item_embeddings.safetensors", log=lambda *a: None)
    out = Path("reports/explorer")
    # the tokenizer's page and the learned IDs' page; the model that copied the tokenizer's IDs has none
    assert sorted(p.name for p in out.iterdir()) == ["index.html", "learner.html", "toy.html"]
    assert [s["name"] for s in summaries] == ["toy", "learner"]
    page = (out / "toy.html").read_text()
    data = json.loads(page.split('id="explorer-data">', 1)[1].split("</script>", 1)[0].replace("<\\/", "</"))
    assert data["stats"] == workspace["stats"]
    assert data["ids"] == workspace["ids"].tolist()
    assert sum(data["usage"][0]) == 60 and data["collision_groups"] >= 1
    assert "</script>" not in page.split('id="explorer-data">', 1)[1].split("</script>", 1)[0]  # titles escaped
    learner = json.loads((out / "learner.html").read_text().split('id="explorer-data">', 1)[1].split("</script>", 1)[0])
    assert learner["side_by_side"][0]["other"] == "toy"
    assert "neighbours" in data  # the SASRec agreement, from the export named


def test_explore_refuses_a_folder_that_is_not_what_its_option_says(workspace):
    from pipeline.config import ParamsError
    from stages import explore

    with pytest.raises(ParamsError, match="DECOR model folders"):
        explore.explore(Path("reports/explorer"), composition=[Path("data/models/learner")], log=lambda *a: None)
    with pytest.raises(ParamsError, match="not a trained model folder"):
        explore.explore(Path("reports/explorer"), learned=[Path("data/models/nope")], log=lambda *a: None)
    with pytest.raises(ParamsError, match="run dvc repro semantic_ids@missing"):
        explore.explore(Path("reports/explorer"), ["toy", "missing"], log=lambda *a: None)


@pytest.mark.skipif(not HAS_BROWSER, reason="needs Chromium and playwright (pip install -e .[browser])")
def test_explorer_page_renders_in_chromium_without_errors(workspace, tmp_path):
    from stages import explore

    explore.explore(Path("reports/explorer"), ["toy"],
                    neighbours_from=Path("data/models/sasrec/item_embeddings.safetensors"),
                    log=lambda *a: None)
    result = shot.open_page(Path("reports/explorer/toy.html"), tmp_path / "toy.png")
    assert result["errors"] == []
    shown = result["stats"]
    assert shown == {k: str(v) if not isinstance(v, bool) else str(v) for k, v in workspace["stats"].items()}
    largest = max(np.bincount(workspace["ids"][:, 0]))
    assert result["code_rows"] == largest  # the browser opens on the largest first-level group
    assert "SASRec neighbours" in result["code_note"]
    assert (tmp_path / "toy.png").stat().st_size > 10_000


EXPLORE_IN_A_FRESH_PROCESS = """
from pathlib import Path
from stages import explore
explore.explore(Path("reports/again"), ["toy"], learned=[Path("data/models/learner")],
                neighbours_from=Path("data/models/sasrec/item_embeddings.safetensors"), log=lambda *a: None)
"""


def test_explorer_pages_are_escaped_self_contained_and_repeat_their_bytes(workspace):
    """The pages come from the package's templates whatever the working directory (here the workspace), with every
    title HTML-escaped, nothing to fetch from elsewhere, and the same bytes when a fresh process writes them again."""
    from stages import explore

    explore.explore(Path("reports/explorer"), ["toy"], learned=[Path("data/models/learner")],
                    neighbours_from=Path("data/models/sasrec/item_embeddings.safetensors"), log=lambda *a: None)
    subprocess.run([sys.executable, "-c", EXPLORE_IN_A_FRESH_PROCESS], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    first, again = Path("reports/explorer"), Path("reports/again")
    assert sorted(p.name for p in again.iterdir()) == ["index.html", "learner.html", "toy.html"]
    for page in first.iterdir():
        assert page.read_bytes() == (again / page.name).read_bytes(), page.name
    page = (first / "toy.html").read_text()
    collisions = page.split('<table id="collisions">', 1)[1].split("</table>", 1)[0]
    assert "Item &lt;5&gt; &amp; &lt;/script&gt;" in collisions and "<5>" not in collisions  # autoescaped titles
    assert page.count("<svg") == 3 and 'id="usage-l1"' in page  # two levels' usage and the prefix sizes, inline
    # nothing outside the file: no script or style to load, links only to the other pages and the SVG namespaces
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=", page)
    assert set(re.findall(r'href="([^"#]*)"', page)) <= {"index.html", "toy.html", "learner.html"}
    assert set(re.findall(r"https?://[^\s\"']+", page)) <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}
