"""`keyplane serve --workers 2`: real processes sharing one database.

Runs against KEYPLANE_TEST_DATABASE_URL (PostgreSQL in `.ci/run`), else a shared SQLite file.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.multiprocess

PG_URL = os.environ.get("KEYPLANE_TEST_DATABASE_URL", "")
VIEWER = "{ viewer { kind apiKey { id } } }"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    env = {
        **os.environ,
        "KEYPLANE_DATA_DIR": str(tmp_path / "data"),
        "KEYPLANE_DATABASE_URL": PG_URL or f"sqlite://{tmp_path / 'shared.sqlite3'}",
    }
    env.pop("KEYPLANE_JWT_SECRET", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "keyplane", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, process)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode() if process.stderr else ""
            raise AssertionError(f"keyplane serve exited early:\n{stderr}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("keyplane serve did not become ready in 30 s")


async def _gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, token: str = ""
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


async def _issue_key(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """Sign up, create a project, an environment and a key: (dashboard token, key id, secret)."""
    signed = await _gql(
        client,
        "mutation($email: String!) { signUp(input: {email: $email, password: \"long enough\", "
        'name: "Ops"}) { accessToken } }',
        {"email": f"ops-{uuid.uuid4().hex}@example.com"},
    )
    token = signed.json()["data"]["signUp"]["accessToken"]
    project = await _gql(client, 'mutation { createProject(input: {name: "P"}) { id } }', token=token)
    project_id = project.json()["data"]["createProject"]["id"]
    env = await _gql(
        client,
        "mutation($p: ID!) { createEnvironment(input: {projectId: $p, name: \"Prod\"}) { id } }",
        {"p": project_id},
        token=token,
    )
    env_id = env.json()["data"]["createEnvironment"]["id"]
    key = await _gql(
        client,
        "mutation($e: ID!) { createApiKey(input: {environmentId: $e, name: \"srv\", "
        "scopes: [VIEW_ANALYTICS]}) { apiKey { id } secret } }",
        {"e": env_id},
        token=token,
    )
    payload = key.json()["data"]["createApiKey"]
    return token, payload["apiKey"]["id"], payload["secret"]


async def test_a_revoked_key_is_refused_by_every_worker_on_the_very_next_request(
    server: str,
) -> None:
    limits = httpx.Limits(max_keepalive_connections=0)  # a new connection each time: any worker
    async with httpx.AsyncClient(base_url=server, limits=limits, timeout=10) as client:
        # given: a key that works through both workers
        token, key_id, secret = await _issue_key(client)
        before = await asyncio.gather(*(_gql(client, VIEWER, token=secret) for _ in range(20)))
        assert {r.status_code for r in before} == {200}

        # when
        revoked = await _gql(
            client, "mutation($id: ID!) { revokeApiKey(id: $id) { status } }", {"id": key_id}, token
        )
        assert revoked.json()["data"]["revokeApiKey"] == {"status": "REVOKED"}
        after = await asyncio.gather(*(_gql(client, VIEWER, token=secret) for _ in range(20)))

        # then
        assert [r.status_code for r in after] == [401] * 20


async def test_concurrent_requests_through_two_workers_are_all_counted(server: str) -> None:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        # given
        token, key_id, secret = await _issue_key(client)

        # when: 200 requests, 25 at a time over separate connections
        semaphore = asyncio.Semaphore(25)

        async def one() -> int:
            async with semaphore:
                return (await _gql(client, VIEWER, token=secret)).status_code

        codes = await asyncio.gather(*(one() for _ in range(200)))

        # then
        assert codes == [200] * 200
        read = await _gql(
            client, "query($id: ID!) { apiKey(id: $id) { totalRequests } }", {"id": key_id}, token
        )
        assert read.json()["data"]["apiKey"] == {"totalRequests": 200}
