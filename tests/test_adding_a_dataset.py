"""docs/adding_a_dataset.md's example, run as written through the download and filter stages.

A small HTTP server on 127.0.0.1 stands in for the example's mirror."""
import functools
import gzip
import http.server
import json
import re
import sys
import threading
import types
from pathlib import Path

import polars as pl
import pytest
import yaml

from pipeline import source_names
from pipeline.code_deps import module_file, stage_code

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "adding_a_dataset.md"
CUSTOMERS, SKUS, PER_CUSTOMER = 10, 8, 6


def guide_example() -> tuple[str, source_names.SourceEntry, dict]:
    """The guide's source module, its entry in pipeline/source_names.py and its params blocks."""
    text = GUIDE.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    entry = re.search(r'"tiny-shop": SourceEntry\("([\w.:]+)", "([^"]+)"\)', text)
    blocks = yaml.safe_load(re.search(r"```yaml\n(.*?)```", text, re.S).group(1))
    return code, source_names.SourceEntry(entry.group(1), entry.group(2)), blocks


def write_export(root: Path) -> None:
    """The shop's export: customer c buys skus c, c+1, ... (mod SKUS), one a day."""
    rows = [f"c{c},s{(c + j) % SKUS},{1_600_000_000 + 86_400 * j}" for c in range(CUSTOMERS)
            for j in range(PER_CUSTOMER)]
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "orders.csv.gz").write_bytes(gzip.compress(("customer,sku,time\n" + "\n".join(rows) + "\n")
                                                              .encode()))
    (root / "v1" / "products.csv").write_text("sku,title,brand\n" + "".join(f"s{s},Product {s},Acme\n"
                                                                             for s in range(SKUS)))


@pytest.fixture
def mirror(tmp_path):
    root = tmp_path / "mirror"
    write_export(root)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_the_guide_example_downloads_and_filters_through_the_stages(workspace, mirror, monkeypatch):
    code, entry, blocks = guide_example()
    assert entry.implementation == "pipeline.data.sources.tiny_shop:TinyShop"
    module = types.ModuleType("pipeline.data.sources.tiny_shop")
    exec(compile(code, "docs/adding_a_dataset.md", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "pipeline.data.sources.tiny_shop", module)
    monkeypatch.setitem(source_names.SOURCES, "tiny-shop", entry)
    blocks["data"]["mirrors"] = {"tiny-shop": [mirror]}
    workspace.params({}, **blocks)

    from stages import download, filter

    download.main()
    filter.main()
    manifest = json.loads(Path("data/raw/manifest.json").read_text())
    assert manifest["dataset"] == "tiny-shop"
    assert {n: f["origin"] for n, f in manifest["files"].items()} == {
        "orders.csv.gz": f"{mirror}/v1/orders.csv.gz", "products.csv": f"{mirror}/v1/products.csv"}
    stats = json.loads(Path("data/interim/sequences/stats.json").read_text())
    assert (stats["users"], stats["items"], stats["interactions"]) == (CUSTOMERS, SKUS, CUSTOMERS * PER_CUSTOMER)
    assert stats["items_without_text"] == 0
    items = pl.read_parquet("data/interim/sequences/items.parquet")
    assert sorted(items["title"]) == sorted(f"Product {s}" for s in range(SKUS))
    test = pl.read_parquet("data/interim/sequences/test.parquet")
    users = pl.read_parquet("data/interim/sequences/users.parquet")
    assert test.height == CUSTOMERS
    # each customer's last purchase is the test target: sku c + PER_CUSTOMER - 1
    raw_user = dict(zip(users["user_id"], users["raw_user_id"]))
    raw_item = dict(zip(items["item_id"], items["raw_item_id"]))
    for user, target in zip(test["user_id"], test["target"]):
        c = int(raw_user[user][1:])
        assert raw_item[target] == f"s{(c + PER_CUSTOMER - 1) % SKUS}"


def test_an_unknown_source_is_refused_naming_the_key_and_the_known_sources(workspace):
    from pipeline.config import ParamsError
    from stages import download

    (workspace.root / "params.yaml").write_text(yaml.safe_dump({"data": {"source": "tiny-shopp"}}))
    with pytest.raises(ParamsError, match=r"data.source: .*unknown source 'tiny-shopp'; known sources: "
                                          r"amazon-scientific, amazon2014, .*movielens-100k"):
        download.main()


@pytest.mark.parametrize("stage", ["download", "filter"])
def test_every_source_module_is_in_the_code_of_the_download_and_filter_stages(stage):
    """A source module the registry does not import would be missing from the stages' code digests."""
    files = set(stage_code(stage))
    for name, entry in source_names.SOURCES.items():
        path = module_file(entry.implementation.split(":")[0])
        assert path is not None, f"{name}: no module file for {entry.implementation}"
        rel = path.relative_to(Path(__file__).resolve().parents[1]).as_posix()
        assert rel in files, f"{name}: {rel} is not in the {stage} stage's code (import it in the registry)"
