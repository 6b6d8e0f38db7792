"""Raw-record parsing: field spellings, every class of bad input, and the local formats."""
import gzip
import json

import pytest

from pipeline.config import ParamsError, params_from_dict
from pipeline.data.download import download
from pipeline.data.prepare import prepare
from pipeline.data.readers import DataError, ReadReport, read_amazon_meta, read_delimited, read_review_jsonl


def write_jsonl(path, records, raw_lines=()):
    lines = [json.dumps(r) for r in records] + list(raw_lines)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        f.write("\n".join(lines) + "\n")
    return path


def test_field_spellings_of_2023_and_2018_releases(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl.gz", [
        {"user_id": "A", "asin": "child", "parent_asin": "P1", "timestamp": 1588687728923},
        {"user_id": "A", "asin": "P2", "sortTimestamp": 1588687728924},
        {"reviewerID": "B", "asin": "P3", "unixReviewTime": 1400000000},
    ])
    df = read_review_jsonl(path, 0, ReadReport())
    assert df.rows() == [("A", "P1", 1588687728923), ("A", "P2", 1588687728924), ("B", "P3", 1400000000)]


def test_malformed_lines_are_skipped_and_counted_under_the_threshold(tmp_path):
    good = [{"user_id": "A", "parent_asin": f"P{i}", "timestamp": i} for i in range(3)]
    path = write_jsonl(tmp_path / "r.jsonl", good, raw_lines=['{"user_id": "A", "parent_as', "garbage"])
    report = ReadReport()
    df = read_review_jsonl(path, 2, report)
    assert df.height == 3 and report.bad_lines == {"r.jsonl": 2}


def test_too_many_malformed_lines_stop_naming_file_and_first_bad_line(tmp_path):
    good = [{"user_id": "A", "parent_asin": "P", "timestamp": 1}]
    path = write_jsonl(tmp_path / "r.jsonl", good, raw_lines=["not json", "{broken", "[1, 2]"])
    with pytest.raises(DataError) as err:
        read_review_jsonl(path, 2, ReadReport())
    assert str(path) in str(err.value) and "line 2" in str(err.value) and "max_bad_lines=2" in str(err.value)


@pytest.mark.parametrize("missing,label", [("user_id", "user"), ("parent_asin", "item"), ("timestamp", "timestamp")])
def test_missing_required_field_stops_with_file_and_line(tmp_path, missing, label):
    rec = {"user_id": "A", "parent_asin": "P", "timestamp": 1}
    bad = dict(rec)
    del bad[missing]
    path = write_jsonl(tmp_path / "r.jsonl", [rec, bad])
    with pytest.raises(DataError, match=rf"r.jsonl:2: missing {label} field"):
        read_review_jsonl(path, 10, ReadReport())


def test_non_numeric_timestamp_stops_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"user_id": "A", "parent_asin": "P", "timestamp": "2020-01-01"}])
    with pytest.raises(DataError, match=r"r.jsonl:1: timestamp '2020-01-01' is not a number"):
        read_review_jsonl(path, 10, ReadReport())


def test_non_numeric_timestamp_stops_csv_with_the_line_number(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("user_id,parent_asin,rating,timestamp\nA,P,5.0,100\nB,Q,4.0,yesterday\n")
    cols = {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp"}
    with pytest.raises(DataError, match=r"r.csv:3: timestamp 'yesterday' is not a number"):
        read_delimited(path, cols, 10, ReadReport())


def test_csv_without_header_and_ragged_lines(tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("A,P,5.0,100\nB,Q,4.0\nC,R,1.0,300,extra\nD,S,2.0,400\n")
    cols = {"user": "user_id", "item": "parent_asin", "timestamp": "timestamp"}
    report = ReadReport()
    df = read_delimited(path, cols, 5, report, names=["user_id", "parent_asin", "rating", "timestamp"])
    assert df.rows() == [("A", "P", 100), ("D", "S", 400)]
    assert report.bad_lines == {"r.csv": 2}
    with pytest.raises(DataError, match=r"r.csv.*the first is line 2"):
        read_delimited(path, cols, 1, ReadReport(), names=["user_id", "parent_asin", "rating", "timestamp"])


def test_metadata_python_literal_lines_and_list_fields(tmp_path):
    path = tmp_path / "meta.json"
    path.write_text(json.dumps({"parent_asin": "P1", "title": "Lamp", "features": ["LED", "5 W"],
                                "categories": ["Home", "Lighting"], "store": "Acme"}) + "\n"
                    + "{'asin': 'P2', 'title': 'Old', 'description': ['a', 'b'], 'brand': 'X'}\n")
    report = ReadReport()
    items = read_amazon_meta(path, 0, report)
    rows = {r["raw_item_id"]: r for r in items.to_dicts()}
    assert rows["P1"]["features"] == "LED, 5 W" and rows["P1"]["brand"] == "Acme"
    assert rows["P2"]["description"] == "a, b" and report.literal_fallbacks == 1


def local_params(tmp_path, **local):
    return params_from_dict({"data": {"source": "local", "local": {"dir": str(tmp_path / "in"), **local}},
                             "filter": {"k": 2}})


def test_local_sequence_format_end_to_end(tmp_path):
    (tmp_path / "in").mkdir()
    inter = {"0": [3, 1, 2], "1": [1, 2, 3, 0], "2": [0, 3, 2]}
    (tmp_path / "in" / "Toy.inter.json").write_text(json.dumps(inter))
    (tmp_path / "in" / "Toy.item.json").write_text(json.dumps(
        {str(i): {"title": f"item {i}", "categories": ["a", "b"]} for i in range(4)}))
    p = local_params(tmp_path, name="Toy")
    download(p.data, tmp_path / "raw")
    stats = prepare(p, tmp_path / "raw", tmp_path / "out", log=lambda *_: None)
    assert (stats["users"], stats["items"], stats["interactions"]) == (3, 4, 10)
    import polars as pl

    items = pl.read_parquet(tmp_path / "out" / "items.parquet")
    assert items["raw_item_id"].to_list() == ["0", "1", "2", "3"]  # already-dense ids keep their values
    assert items["title"].to_list()[1] == "item 1" and items["categories"][0] == "a, b"
    test = pl.read_parquet(tmp_path / "out" / "test.parquet").to_dicts()
    assert test[1] == {"user_id": 1, "history": [1, 2, 3], "target": 0}


def test_local_table_format_and_identical_bytes_on_rerun(tmp_path):
    (tmp_path / "in").mkdir()
    rows = ["uid,iid,ts"] + [f"u{u},i{(u * 3 + j) % 7},{100 * j + u}" for u in range(6) for j in range(4)]
    (tmp_path / "in" / "inter.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "in" / "items.csv").write_text("iid,title\n" + "\n".join(f"i{i},Thing {i}" for i in range(7)) + "\n")
    p = local_params(tmp_path, format="table", interactions="inter.csv", items="items.csv",
                     user_column="uid", item_column="iid", time_column="ts")
    download(p.data, tmp_path / "raw")
    prepare(p, tmp_path / "raw", tmp_path / "a", log=lambda *_: None)
    prepare(p, tmp_path / "raw", tmp_path / "b", log=lambda *_: None)
    for name in ("items", "users", "interactions", "train", "valid", "test"):
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes()


def test_local_table_with_wrong_column_name_names_the_column(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "inter.csv").write_text("user,item,time\na,b,1\n")
    p = local_params(tmp_path, format="table", interactions="inter.csv")
    download(p.data, tmp_path / "raw")
    with pytest.raises(DataError, match=r"inter.csv:1: missing user column 'user_id'"):
        prepare(p, tmp_path / "raw", tmp_path / "out", log=lambda *_: None)


def test_params_unknown_key_and_out_of_range_value_are_named():
    with pytest.raises(ParamsError, match=r"filter.kcore: unknown key"):
        params_from_dict({"filter": {"kcore": 5}})
    with pytest.raises(ParamsError, match=r"filter.k: Input should be greater than or equal to 1"):
        params_from_dict({"filter": {"k": 0}})
    with pytest.raises(ParamsError, match=r"data.source"):
        params_from_dict({"data": {"source": "amazon2030"}})
    with pytest.raises(ParamsError, match=r"  seed: Input should be greater than or equal to 0"):
        params_from_dict({"seed": -1})  # numpy's generators would refuse it mid-stage


def test_an_items_file_keyed_by_other_ids_passes_filter_and_is_refused_at_embed(tmp_path):
    """The user's mistake: item text keyed by ASINs, interactions by numbers. The filter warns and records both
    files' first ids; embed refuses the catalogue of empty texts, naming them."""
    from pipeline.tokenizers.embedding import EmbedError, embed_items

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "Toy.inter.json").write_text(json.dumps({"0": [3, 1, 2], "1": [1, 2, 3, 0], "2": [0, 3, 2]}))
    (tmp_path / "in" / "Toy.item.json").write_text(json.dumps({f"B00{i}": {"title": f"item {i}"} for i in range(4)}))
    p = local_params(tmp_path, name="Toy")
    download(p.data, tmp_path / "raw")
    stats = prepare(p, tmp_path / "raw", tmp_path / "out", log=lambda *_: None)
    assert stats["items_without_text"] == 4
    assert stats["item_ids_sample"] == ["0", "1", "2", "3"] and stats["metadata_ids_sample"][0] == "B000"
    with pytest.raises(EmbedError, match=r"4 of 4 items \(100.0%\).*\['0', '1', '2', '3'\]; the metadata file's "
                                         r"first ids are \['B000', 'B001', 'B002', 'B003'\]"):
        embed_items(p, tmp_path / "out" / "items.parquet", tmp_path / "emb", log=lambda *_: None)
