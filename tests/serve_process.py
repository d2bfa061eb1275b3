"""One `keyplane serve` process with its own settings, for tests of connections and faults."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def keyplane_serve(tmp_path: Path, **settings: str) -> Iterator[str]:
    """Yields the base URL of a one-worker server started with these `KEYPLANE_*` settings
    (on a SQLite file in `tmp_path` unless KEYPLANE_DATABASE_URL is given), stopped at the end."""
    port = free_port()
    env = {
        **os.environ,
        "KEYPLANE_DATA_DIR": str(tmp_path / "data"),
        "KEYPLANE_DATABASE_URL": f"sqlite://{tmp_path / 'keyplane.sqlite3'}",
        "KEYPLANE_RATE_LIMIT_STORAGE": "memory://",
        # The production profile (the default) needs a random secret of its own.
        "KEYPLANE_JWT_SECRET": secrets.token_urlsafe(48),
        **settings,
    }
    log = tmp_path / f"serve-{port}.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyplane", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, process, log)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Until the server answers /readyz (30 s at most); its log is shown if it does not."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"keyplane serve exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"keyplane serve did not become ready in 30 s:\n{log.read_text()}")
