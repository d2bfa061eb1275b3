"""`keyplane serve --workers 2`: real processes sharing one database and one Redis.

Runs against KEYPLANE_TEST_DATABASE_URL (PostgreSQL in `.ci/run`), else a shared SQLite file.
Several workers need shared rate-limit storage: KEYPLANE_TEST_REDIS_URL (`.ci/run` sets it);
without it these tests are skipped, since keyplane refuses to multiply its limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyplane.listeners import balanced
from tests.serve_process import (
    Servers,
    any_worker,
    needs_redis,
    refused_start,
    started_servers,
)

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

PG_URL = os.environ.get("KEYPLANE_TEST_DATABASE_URL", "")
VIEWER = "{ viewer { kind apiKey { id } } }"


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[Servers]:
    async for started in started_servers(tmp_path, PG_URL):
        yield started


@pytest.fixture(params=["sqlite", "postgres"])
async def servers_on_each_database(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Servers]:
    """Workers sharing a SQLite file (the version in a file beside it), then PostgreSQL
    (the version in Redis)."""
    if request.param == "postgres" and not PG_URL:
        pytest.skip("KEYPLANE_TEST_DATABASE_URL is not set")
    async for started in started_servers(tmp_path, PG_URL if request.param == "postgres" else ""):
        yield started


async def _gql(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, token: str = ""
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )


async def _issue_key(
    client: httpx.AsyncClient, rate_limit: int | None = None
) -> tuple[str, str, str]:
    """Sign up, create a project, an environment and a key: (dashboard token, key id, secret)."""
    signed = await _gql(
        client,
        'mutation($email: String!) { signUp(input: {email: $email, password: "long enough", '
        'name: "Ops"}) { accessToken } }',
        {"email": f"ops-{uuid.uuid4().hex}@example.com"},
    )
    token = signed.json()["data"]["signUp"]["accessToken"]
    project = await _gql(
        client, 'mutation { createProject(input: {name: "P"}) { id } }', token=token
    )
    project_id = project.json()["data"]["createProject"]["id"]
    env = await _gql(
        client,
        'mutation($p: ID!) { createEnvironment(input: {projectId: $p, name: "Prod"}) { id } }',
        {"p": project_id},
        token=token,
    )
    env_id = env.json()["data"]["createEnvironment"]["id"]
    key = await _gql(
        client,
        'mutation($e: ID!, $limit: Int) { createApiKey(input: {environmentId: $e, name: "srv", '
        "scopes: [VIEW_ANALYTICS], rateLimitPerMinute: $limit}) { apiKey { id } secret } }",
        {"e": env_id, "limit": rate_limit},
        token=token,
    )
    payload = key.json()["data"]["createApiKey"]
    return token, payload["apiKey"]["id"], payload["secret"]


@needs_redis
async def test_a_revoked_key_is_refused_by_every_worker_on_the_very_next_request(
    servers_on_each_database: Servers,
) -> None:
    server = servers_on_each_database.start()
    async with any_worker(server) as client:
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


@needs_redis
async def test_narrowed_scopes_and_ended_sessions_hold_on_every_worker_at_once(
    servers_on_each_database: Servers,
) -> None:
    server = servers_on_each_database.start()
    async with any_worker(server) as client:
        # given: a key and a session that every worker has served (and kept)
        token, key_id, secret = await _issue_key(client)
        scoped = "{ viewer { apiKey { scopes } } }"
        before = await asyncio.gather(*(_gql(client, scoped, token=secret) for _ in range(20)))
        assert {r.status_code for r in before} == {200}
        users = await asyncio.gather(*(_gql(client, VIEWER, token=token) for _ in range(20)))
        assert {r.status_code for r in users} == {200}

        # when: the key loses every scope but one, then the session ends
        updated = await _gql(
            client,
            "mutation($id: ID!) { updateApiKey(input: {id: $id, scopes: [GENERATE_DOCUMENTS]}) "
            "{ scopes } }",
            {"id": key_id},
            token,
        )
        assert updated.json()["data"]["updateApiKey"] == {"scopes": ["GENERATE_DOCUMENTS"]}
        narrowed = await asyncio.gather(*(_gql(client, scoped, token=secret) for _ in range(20)))
        logged_out = await _gql(client, "mutation { logOut }", token=token)
        assert logged_out.json()["data"] == {"logOut": True}
        ended = await asyncio.gather(*(_gql(client, VIEWER, token=token) for _ in range(20)))

        # then
        assert {str(r.json()["data"]["viewer"]["apiKey"]["scopes"]) for r in narrowed} == {
            "['GENERATE_DOCUMENTS']"
        }
        assert [r.status_code for r in ended] == [401] * 20


@needs_redis
async def test_concurrent_requests_through_two_workers_are_all_counted(servers: Servers) -> None:
    server = servers.start()
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        # given
        token, key_id, secret = await _issue_key(client, rate_limit=1000)

        # when: 200 requests, 25 at a time over separate connections
        semaphore = asyncio.Semaphore(25)

        async def one() -> int:
            async with semaphore:
                return (await _gql(client, VIEWER, token=secret)).status_code

        codes = await asyncio.gather(*(one() for _ in range(200)))

        # then: every worker flushes its buffered counts within a second
        assert codes == [200] * 200
        assert await _total_requests(client, key_id, token, expect=200) == 200


async def _total_requests(client: httpx.AsyncClient, key_id: str, token: str, expect: int) -> int:
    """totalRequests as read through any worker, polled for up to 3 flush intervals."""
    total = -1
    for _ in range(30):
        read = await _gql(
            client, "query($id: ID!) { apiKey(id: $id) { totalRequests } }", {"id": key_id}, token
        )
        total = read.json()["data"]["apiKey"]["totalRequests"]
        if total == expect:
            break
        await asyncio.sleep(0.1)
    return int(total)


def test_several_workers_with_in_process_rate_limits_refuse_to_start(tmp_path: Path) -> None:
    # when
    completed = refused_start(
        tmp_path, "--workers", "2", "--port", "1", KEYPLANE_RATE_LIMIT_STORAGE="memory://"
    )

    # then
    assert completed.returncode == 2
    assert "KEYPLANE_RATE_LIMIT_STORAGE" in completed.stderr


@needs_redis
async def test_two_servers_sharing_redis_admit_exactly_100_of_300_requests_with_one_key(
    servers: Servers,
) -> None:
    # given: two `keyplane serve --workers 2`, one database, one Redis
    first, second = servers.start(), servers.start()
    async with (
        any_worker(first, timeout=30) as one,
        any_worker(second, timeout=30) as two,
    ):
        token, key_id, secret = await _issue_key(one)
        semaphore = asyncio.Semaphore(20)

        async def call(client: httpx.AsyncClient) -> int:
            async with semaphore:
                return (await _gql(client, VIEWER, token=secret)).status_code

        # when: 300 requests, alternating between the two servers
        codes = await asyncio.gather(*(call(one if i % 2 else two) for i in range(300)))

        # then
        assert codes.count(200) == 100
        assert codes.count(429) == 200
        assert await _total_requests(two, key_id, token, expect=100) == 100

        # and revocation on one server is seen by the other on the very next request
        revoked = await _gql(
            one, "mutation($id: ID!) { revokeApiKey(id: $id) { status } }", {"id": key_id}, token
        )
        assert revoked.json()["data"]["revokeApiKey"] == {"status": "REVOKED"}
        assert (await _gql(two, VIEWER, token=secret)).status_code == 401


def _sockets_on(port: int, pid: int) -> dict[str, list[int]]:
    """Inodes of the TCP sockets process `pid` holds on local `port`, by state (Linux /proc)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(int(target[8:-1]))
    states = {"0A": "listening", "01": "established"}
    found: dict[str, list[int]] = {"listening": [], "established": []}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            inode = int(fields[9])
            if local_port == port and inode in held and fields[3] in states:
                found[states[fields[3]]].append(inode)
    return found


def _listening_workers(supervisor: int, port: int, without: Collection[int] = ()) -> list[int]:
    """The supervisor's children that listen on `port`, none of them in `without`, once there
    are two (one is ready first: the other may still be starting, or being started again), or
    what there is after 30 s."""
    deadline = time.monotonic() + 30
    while True:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
        workers = [int(pid) for pid in children if _sockets_on(port, int(pid))["listening"]]
        if (len(workers) >= 2 and not set(workers) & set(without)) or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


@dataclass
class TwoWorkers:
    base: str
    port: int
    supervisor: int
    workers: list[int]


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[TwoWorkers]:
    """`keyplane serve --workers 2` on Linux, once both workers listen; stopped at the end."""
    if not balanced():
        pytest.skip("SO_REUSEPORT balancing is Linux's")
    servers = Servers(tmp_path)
    try:
        base = servers.start()
        port = int(base.rsplit(":", 1)[1])
        supervisor = servers.processes[-1].pid
        yield TwoWorkers(base, port, supervisor, _listening_workers(supervisor, port))
    finally:
        servers.stop_all()


@needs_redis
def test_each_worker_listens_on_its_own_socket_and_is_given_its_share_of_connections(
    two_workers: TwoWorkers,
) -> None:
    # given: `keyplane serve --workers 2`
    port, workers = two_workers.port, two_workers.workers

    # when: a client opens 32 keep-alive connections at once, each answered once
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(32)]
    try:
        for client in clients:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: keyplane\r\n\r\n")
        for client in clients:
            assert client.recv(4096).startswith(b"HTTP/1.1 200")
        held = {pid: _sockets_on(port, pid) for pid in workers}
    finally:
        for client in clients:
            client.close()

    # then: two workers, each listening on a socket of its own (not one shared socket),
    # the supervisor on none, and each worker given its share of the connections (by a
    # hash of their addresses: fewer than 4 of 32 on one side is about 1 in 10^5)
    assert len(workers) == 2
    listening = [inode for pid in workers for inode in held[pid]["listening"]]
    assert len(listening) == len(set(listening)) == 2
    assert _sockets_on(port, two_workers.supervisor)["listening"] == []
    assert sum(len(held[pid]["established"]) for pid in workers) == 32
    assert min(len(held[pid]["established"]) for pid in workers) >= 4


@needs_redis
def test_a_worker_that_dies_is_replaced_by_one_listening_on_a_socket_of_its_own(
    two_workers: TwoWorkers,
) -> None:
    # given: `keyplane serve --workers 2`, both workers listening
    dying, surviving = two_workers.workers

    # when: one worker is killed (the supervisor starts another)
    os.kill(dying, signal.SIGKILL)
    workers = _listening_workers(two_workers.supervisor, two_workers.port, without={dying})

    # then: the new worker listens on a new socket of its own, beside the survivor's
    assert surviving in workers
    assert dying not in workers
    assert len(workers) == 2
    listening = [
        inode for pid in workers for inode in _sockets_on(two_workers.port, pid)["listening"]
    ]
    assert len(listening) == len(set(listening)) == 2
    answered = [httpx.get(f"{two_workers.base}/healthz", timeout=5).status_code for _ in range(20)]
    assert answered == [200] * 20
