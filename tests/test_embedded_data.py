"""The embedded default dataset (data/embedded/amazon-scientific): checked byte for byte when the download stage
copies it and when the filter stage reads the copy, read into the counts its source note states."""
import hashlib
import shutil
from pathlib import Path

import pytest

from pipeline.config import params_from_dict
from pipeline.data import embedded
from pipeline.data.download import download
from pipeline.data.prepare import prepare
from pipeline.data.readers import DataError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """A working directory holding a copy of the shipped folder (the stages read it relative to the repository)."""
    shutil.copytree(REPO / embedded.DIR, tmp_path / embedded.DIR)
    monkeypatch.chdir(tmp_path)
    return tmp_path / embedded.DIR


def test_the_shipped_files_match_the_code_and_the_sha256sums_file():
    listed = dict(reversed(line.split()) for line in (REPO / embedded.DIR / "SHA256SUMS").read_text().splitlines())
    assert listed == embedded.SHA256
    for name, digest in embedded.SHA256.items():
        assert hashlib.sha256((REPO / embedded.DIR / name).read_bytes()).hexdigest() == digest
        assert digest in (REPO / embedded.DIR / "SOURCE.md").read_text()


def test_the_default_source_reads_into_the_stated_counts(shipped, tmp_path):
    params = params_from_dict({})
    assert params.data.source == embedded.SOURCE and params.data.dataset_name == "amazon-scientific"
    manifest = download(params.data, tmp_path / "raw")
    assert manifest["files"]["Scientific.item.json"]["sha256"] == embedded.SHA256["Scientific.item.json"]
    stats = prepare(params, tmp_path / "raw", tmp_path / "sequences", log=lambda *_: None)
    assert (stats["users"], stats["items"], stats["interactions"]) == (8317, 4344, 58492)
    assert stats["items_without_text"] == 0


def test_one_changed_byte_in_the_shipped_folder_is_refused_naming_the_file(shipped, tmp_path):
    path = shipped / "Scientific.inter.json"
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"Scientific\.inter\.json: SHA-256 .*git checkout"):
        download(params_from_dict({}).data, tmp_path / "raw")
    assert not (tmp_path / "raw" / "Scientific.item.json").exists()  # nothing copied from a refused folder


def test_a_changed_copy_in_data_raw_is_refused_by_the_filter_stage(shipped, tmp_path):
    params = params_from_dict({})
    download(params.data, tmp_path / "raw")
    with open(tmp_path / "raw" / "Scientific.item.json", "ab") as f:
        f.write(b" ")
    with pytest.raises(DataError, match=r"raw/Scientific\.item\.json: SHA-256 .* run the download stage again"):
        prepare(params, tmp_path / "raw", tmp_path / "sequences", log=lambda *_: None)


def test_a_missing_shipped_file_is_named(shipped, tmp_path):
    (shipped / "Scientific.item.json").unlink()
    with pytest.raises(DataError, match=r"Scientific\.item\.json: missing"):
        download(params_from_dict({}).data, tmp_path / "raw")
