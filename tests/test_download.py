"""Downloads: resume with HTTP ranges, mirror fallback, the manifest, and failing fast with no network.

A small HTTP server on 127.0.0.1 stands in for a mirror.
"""
import gzip
import hashlib
import http.server
import json
import socket
import threading

import pytest

from pipeline.config import params_from_dict
from pipeline.data.download import (
    MANIFEST,
    DownloadError,
    NetworkUnavailable,
    RemoteFile,
    download,
    fetch_from_mirrors,
    fetch_url,
)
from pipeline.data.readers import DataError

PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


class RangeHandler(http.server.BaseHTTPRequestHandler):
    ranges_seen: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/mirror/file.bin":
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng:
            RangeHandler.ranges_seen.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD) - start))
        self.end_headers()
        self.wfile.write(PAYLOAD[start:])


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    RangeHandler.ranges_seen = []
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_interrupted_download_resumes_from_the_part_file(server, tmp_path):
    dest = tmp_path / "file.bin"
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:300_000])  # what an interrupted run left
    fetch_url(f"{server}/mirror/file.bin", dest, timeout=5)
    assert dest.read_bytes() == PAYLOAD
    assert RangeHandler.ranges_seen == ["bytes=300000-"]
    assert not (tmp_path / "file.bin.part").exists()


def test_next_mirror_is_tried_after_a_404(server, tmp_path):
    rf = RemoteFile("file.bin", ("file.bin",))
    url = fetch_from_mirrors(rf, [f"{server}/missing", f"{server}/mirror"], tmp_path, timeout=5)
    assert url == f"{server}/mirror/file.bin" and (tmp_path / "file.bin").read_bytes() == PAYLOAD


def test_all_mirrors_404_is_a_download_error_not_a_network_failure(server, tmp_path):
    with pytest.raises(DownloadError) as err:
        fetch_from_mirrors(RemoteFile("nope.bin", ("nope.bin",)), [server], tmp_path, timeout=5)
    assert not isinstance(err.value, NetworkUnavailable) and "HTTP 404" in str(err.value)


def test_no_network_fails_at_once_naming_url_and_how_to_supply_the_file(tmp_path):
    mirror = f"http://127.0.0.1:{closed_port()}/amazon"
    p = params_from_dict({"data": {"source": "amazon2023", "category": "Toys", "mirrors": {"amazon2023": [mirror]}}})
    with pytest.raises(NetworkUnavailable) as err:
        download(p.data, tmp_path)
    msg = str(err.value)
    assert f"{mirror}/benchmark/5core/rating_only/Toys.csv.gz: cannot connect" in msg
    assert str(tmp_path / "Toys.csv.gz") in msg and "data.source: local" in msg


def test_files_already_present_are_used_and_recorded_in_the_manifest(tmp_path):
    p = params_from_dict({"data": {"source": "amazon2018", "category": "Beauty",
                                   "mirrors": {"amazon2018": [f"http://127.0.0.1:{closed_port()}"]}}})
    for name in ("Beauty_5.json.gz", "meta_Beauty.json.gz"):
        (tmp_path / name).write_bytes(gzip.compress(name.encode(), mtime=0))
    (tmp_path / "stale_from_other_source.csv").write_text("x")
    manifest = download(p.data, tmp_path)
    assert set(manifest["files"]) == {"Beauty_5.json.gz", "meta_Beauty.json.gz"}
    assert manifest["files"]["Beauty_5.json.gz"]["sha256"] == \
        hashlib.sha256(gzip.compress(b"Beauty_5.json.gz", mtime=0)).hexdigest()
    assert json.loads((tmp_path / "manifest.json").read_text()) == manifest
    assert not (tmp_path / "stale_from_other_source.csv").exists()


def test_local_source_missing_file_is_named(tmp_path):
    p = params_from_dict({"data": {"source": "local", "local": {"dir": str(tmp_path), "name": "Shop"}}})
    with pytest.raises(DownloadError, match=r"Shop.inter.json: not found"):
        download(p.data, tmp_path / "raw")


def test_a_cut_off_download_is_removed_and_never_recorded(tmp_path):
    """A mirror that ends the transfer early (the HTTP layer saw nothing wrong): the gzip stream is checked to
    its end before the manifest records the file, and the broken copy is deleted so that a re-run fetches it."""
    p = params_from_dict({"data": {"source": "amazon2014", "category": "Beauty"}})
    whole = gzip.compress(b'{"reviewerID": "A", "asin": "B", "unixReviewTime": 1400000000}\n' * 500, mtime=0)

    def cut_fetch(rf, mirrors, raw_dir, timeout):
        (raw_dir / rf.name).write_bytes(whole[: len(whole) // 2])
        return f"https://mirror.example/{rf.name}"

    with pytest.raises(DataError) as err:
        download(p.data, tmp_path, fetch=cut_fetch)
    msg = str(err.value)
    assert "reviews_Beauty_5.json.gz: the file is cut off" in msg and "removed, so that the next run" in msg
    assert not (tmp_path / "reviews_Beauty_5.json.gz").exists() and not (tmp_path / MANIFEST).exists()


def test_a_broken_file_the_user_put_in_place_is_named_not_deleted(tmp_path):
    p = params_from_dict({"data": {"source": "amazon2014", "category": "Beauty"}})
    for name in ("reviews_Beauty_5.json.gz", "meta_Beauty.json.gz"):
        whole = gzip.compress(b"{}\n" * 100, mtime=0)
        (tmp_path / name).write_bytes(whole[: len(whole) // 2])
    with pytest.raises(DataError, match=r"cut off.*\n\(This file was already in .*replace it with a complete copy"):
        download(p.data, tmp_path)
    assert (tmp_path / "reviews_Beauty_5.json.gz").exists()


def test_a_damaged_movielens_zip_already_in_place_is_refused_before_it_is_recorded(tmp_path):
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ml-100k/u.data", "1\t2\t5\t881250949\n" * 2000)
    (tmp_path / "ml-100k.zip").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    p = params_from_dict({"data": {"source": "movielens-100k"}})
    with pytest.raises(DataError, match=r"ml-100k.zip: cannot be read \(BadZipFile"):
        download(p.data, tmp_path)
    assert not (tmp_path / MANIFEST).exists()
