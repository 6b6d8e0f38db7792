"""Local servers for the length of a block: health wait, output kept for the error, clean stop."""
import sys

import pytest

from pipeline.orchestration.local_server import ServerError, local_server


def test_a_server_that_exits_is_reported_with_its_exit_code_and_output():
    crash = lambda port: [sys.executable, "-c", "print('cannot bind: boom'); raise SystemExit(3)"]  # noqa: E731
    with pytest.raises(ServerError, match=r"exit code 3.*cannot bind: boom"):
        with local_server(crash, "/health", timeout_s=30):
            pass


def test_a_healthy_server_is_yielded_and_stopped_afterwards(tmp_path):
    import urllib.request

    (tmp_path / "health").write_text("ok")
    serve = lambda port: [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",  # noqa: E731
                          "--directory", str(tmp_path)]
    with local_server(serve, "/health", timeout_s=60) as base:
        with urllib.request.urlopen(base + "/health", timeout=5) as r:
            assert r.read() == b"ok"
    with pytest.raises(OSError):  # stopped with the block
        urllib.request.urlopen(base + "/health", timeout=2)
