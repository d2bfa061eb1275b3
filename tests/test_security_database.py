"""Database faults (issue 15, Build 8): a locked or unreachable database gets a 503 with
`Retry-After` and SERVICE_UNAVAILABLE after a bounded wait, and keyplane recovers by itself.

SQLite: another connection holds the write lock. PostgreSQL: a private instance that the test
starts, stops and starts again (never the shared server on 5432).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyplane.auth.api_key import generate_secret
from tests.helpers import Api
from tests.serve_process import free_port, keyplane_serve

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

GENEROUS = "anonymous=100000/minute;jwt=100000/minute"
SIGN_UP = """mutation($input: SignUpInput!) { signUp(input: $input) { accessToken } }"""
COST = {"requested": 11, "maximum": 25_000}  # a mutation (10) returning one object
CREATE_PROJECT = """mutation($name: String!) { createProject(input: {name: $name}) { name } }"""
UNAVAILABLE_BODY = {
    "data": None,
    "errors": [
        {
            "message": "The database is unavailable; retry shortly.",
            "extensions": {"code": "SERVICE_UNAVAILABLE"},
        }
    ],
}
# A well-formed key that was never issued: its lookup must reach the database.
UNKNOWN_KEY = generate_secret()


def _gql(
    client: httpx.Client, query: str, variables: dict[str, Any], token: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/graphql", json={"query": query, "variables": variables}, headers=headers)


def _sign_up(client: httpx.Client, email: str) -> str:
    answer = _gql(
        client, SIGN_UP, {"input": {"email": email, "password": "correct horse", "name": "a"}}
    )
    token: str = answer.json()["data"]["signUp"]["accessToken"]
    return token


def _timed(call: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def _unavailable(response: httpx.Response) -> tuple[int, bool, Any]:
    return response.status_code, "retry-after" in response.headers, response.json()


def test_a_mutation_on_a_locked_sqlite_database_gets_503_then_succeeds_once_released(
    tmp_path: Path,
) -> None:
    with keyplane_serve(tmp_path, KEYPLANE_RATE_LIMITS=GENEROUS) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            token = _sign_up(client, "locked@example.com")
            # given: another process's connection holds the write lock
            holder = sqlite3.connect(tmp_path / "keyplane.sqlite3", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")

            # when
            refused, waited = _timed(lambda: _gql(client, CREATE_PROJECT, {"name": "p"}, token))
            holder.execute("ROLLBACK")
            holder.close()
            admitted = _gql(client, CREATE_PROJECT, {"name": "p"}, token)

    # then
    assert _unavailable(refused) == (503, True, UNAVAILABLE_BODY)
    assert waited < 5.5
    assert (admitted.status_code, admitted.json()) == (
        200,
        {"data": {"createProject": {"name": "p"}}, "extensions": {"cost": COST}},
    )


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


class PrivatePostgres:
    """A PostgreSQL instance of the test's own, in a temporary directory on a free port.
    initdb refuses to run as root: then it runs as the `postgres` user."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.data = root / "pgdata"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin_dir / tool), *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        log = str(self.data.parent / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    bin_dir = _postgres_bin()
    if bin_dir is None or (os.geteuid() == 0 and shutil.which("runuser") is None):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine")
    # Directly under the temporary root: the `postgres` user cannot reach pytest's own
    # (private to root) temporary directories.
    with tempfile.TemporaryDirectory(prefix="keyplane-pg-") as root:
        instance = PrivatePostgres(bin_dir, Path(root))
        instance.start()
        try:
            yield instance
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                instance.stop()


def test_a_stopped_postgresql_gets_503_within_5_s_and_a_restarted_one_is_used_again(
    tmp_path: Path, private_postgres: PrivatePostgres
) -> None:
    with keyplane_serve(
        tmp_path, KEYPLANE_DATABASE_URL=private_postgres.url, KEYPLANE_RATE_LIMITS=GENEROUS
    ) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            token = _sign_up(client, "stopped@example.com")
            assert _gql(client, CREATE_PROJECT, {"name": "before"}, token).status_code == 200
            # given
            private_postgres.stop()

            # when: a resolver's query, then a key lookup while authenticating
            in_resolver, resolver_wait = _timed(
                lambda: _gql(client, CREATE_PROJECT, {"name": "during"}, token)
            )
            in_authentication, authentication_wait = _timed(
                lambda: _gql(client, "{ viewer { kind } }", {}, UNKNOWN_KEY)
            )
            private_postgres.start()
            recovered = _gql(client, CREATE_PROJECT, {"name": "after"}, token)

    # then
    assert _unavailable(in_resolver) == (503, True, UNAVAILABLE_BODY)
    assert _unavailable(in_authentication) == (503, True, UNAVAILABLE_BODY)
    assert max(resolver_wait, authentication_wait) < 5
    assert (recovered.status_code, recovered.json()) == (
        200,
        {"data": {"createProject": {"name": "after"}}, "extensions": {"cost": COST}},
    )


async def test_a_database_fault_while_linking_an_oauth_identity_is_503_not_500(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the first sight of an OAuth identity writes its link, and the database is locked
    from keyplane.auth import authenticate

    async def locked(*args: object, **kwargs: object) -> str | None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(authenticate, "_link_by_email", locked)
    token = api.oauth.token(sub="first-sight", email="nobody-yet@example.com")

    # when
    response = await api.client.post(
        "/graphql",
        json={"query": "{ viewer { kind } }"},
        headers={"Authorization": f"Bearer {token}"},
    )

    # then
    assert response.status_code == 503
    assert "Retry-After" in response.headers
    assert response.json()["errors"][0]["extensions"] == {"code": "SERVICE_UNAVAILABLE"}
