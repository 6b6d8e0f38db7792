"""Local servers started for the length of a block (Prefect, MLflow): free port, health wait, clean stop."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
import urllib.request
from typing import Callable, Iterator


class ServerError(RuntimeError):
    """A local server exited or did not answer its health check in time."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_server(command: Callable[[int], list[str]], health_path: str, env: dict | None = None,
                 timeout_s: float = 120.0) -> Iterator[str]:
    """Start ``command(port)`` on a free port, wait until ``http://127.0.0.1:<port><health_path>`` answers
    200, yield the base URL, and stop the server when the block ends. A server that exits or stays silent
    raises ServerError with the end of its output."""
    port = free_port()
    # The server's output goes to a file, not a pipe: nobody reads a pipe while the block runs, and a
    # server that logs every request would block once the pipe's buffer is full.
    log = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen(command(port), env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(base + health_path, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                log.seek(0)
                output = log.read()[-2000:]
                raise ServerError(f"{command(port)[0]} did not answer on {base}{health_path} within "
                                   f"{timeout_s:.0f}s (exit code {proc.poll()}): {output}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
