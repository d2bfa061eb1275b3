"""One `keyplane serve` process with its own settings, for tests of connections and faults."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest

from tests.helpers import Api, OAuthIssuer


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


def refused_start(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    """`keyplane serve *args` with these `KEYPLANE_*` settings, run to its end: for a server
    that must refuse to start (its exit status and stderr are the result)."""
    return subprocess.run(
        [sys.executable, "-m", "keyplane", "serve", *args],
        env={
            **os.environ,
            "KEYPLANE_DATA_DIR": str(tmp_path),
            "KEYPLANE_JWT_SECRET": secrets.token_urlsafe(48),
            **settings,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


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


REDIS_URL = os.environ.get("KEYPLANE_TEST_REDIS_URL", "")
# Under pytest-xdist each worker flushes and uses its own Redis database (gw0 -> 15, gw1 -> 14...).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
if REDIS_URL:
    REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + f"/{15 - int(_WORKER.removeprefix('gw') or 0)}"
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="KEYPLANE_TEST_REDIS_URL is not set")


class Servers:
    """Starts `keyplane serve` processes that share one database (and Redis, when given)."""

    def __init__(self, tmp_path: Path, database_url: str = "") -> None:
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[bytes]] = []
        self.database_url = database_url or f"sqlite://{tmp_path / 'shared.sqlite3'}"
        self.jwt_secret = secrets.token_urlsafe(48)  # shared by every server started here

    def start(self, *, workers: int = 2, storage: str = REDIS_URL) -> str:
        port = free_port()
        env = {
            **os.environ,
            "KEYPLANE_DATA_DIR": str(self.tmp_path / "data"),
            "KEYPLANE_DATABASE_URL": self.database_url,
            "KEYPLANE_RATE_LIMIT_STORAGE": storage or "memory://",
            "KEYPLANE_JWT_SECRET": self.jwt_secret,
        }
        command = [sys.executable, "-m", "keyplane", "serve", "--port", str(port)]
        # A file, not a pipe: an undrained pipe fills up and blocks the server's logging.
        log = self.tmp_path / f"serve-{port}.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [*command, "--workers", str(workers)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        self.processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, process, log)
        return base

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


async def started_servers(tmp_path: Path, database_url: str) -> AsyncIterator[Servers]:
    """Servers on `database_url` (SQLite in `tmp_path` when empty), with a fresh Redis database,
    all stopped at the end."""
    if REDIS_URL:
        import coredis

        client = coredis.Redis.from_url(REDIS_URL)
        await client.flushdb()
    started = Servers(tmp_path, database_url)
    try:
        yield started
    finally:
        started.stop_all()


def any_worker(base_url: str, *, timeout: float = 10) -> httpx.AsyncClient:
    """A client that opens a new connection for each request, so that any worker may answer."""
    limits = httpx.Limits(max_keepalive_connections=0)
    return httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout)


@asynccontextmanager
async def any_worker_api(
    base_url: str, jwks_dir: Path, *, seconds: float = 10
) -> AsyncIterator[Api]:
    """An `Api` over `any_worker` (its OAuth issuer's keys published in `jwks_dir`), whose
    requests time out after `seconds`."""
    async with any_worker(base_url, timeout=seconds) as client:
        yield Api(client, OAuthIssuer.create(jwks_dir / "jwks.json"))
