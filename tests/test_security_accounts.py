"""Accounts (issue 15, item 7): a per-account login lockout, and private data files.

After 10 wrong passwords for one account within 15 minutes, that account's logins are refused
for 15 minutes from any address, with exactly the answer a wrong password gets, after the same
argon2 verification. The count and the lock live in the database, so every worker keeps them.

Every file keyplane writes in its data directory is created readable by its owner only.
"""

from __future__ import annotations

import asyncio
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from keyplane.auth.passwords import Passwords
from tests.helpers import Api, Clock, OAuthIssuer, Result, cost
from tests.serve_process import Servers, any_worker_api, needs_redis

PASSWORD = "correct horse"
WRONG = "wrong horse!"
LOG_IN = "mutation($input: LogInInput!) { logIn(input: $input) { user { email } } }"
FIFTEEN_MINUTES = 15 * 60


async def log_in(api: Api, email: str, password: str) -> Result:
    return await api.gql(LOG_IN, {"input": {"email": email, "password": password}})


async def fail(api: Api, email: str, times: int) -> None:
    for _ in range(times):
        assert (await log_in(api, email, WRONG)).codes == ["UNAUTHENTICATED"]


def answer(result: Result) -> tuple[int, Any]:
    return result.status, result.body


def accepted(email: str) -> tuple[int, Any]:
    return 200, {"data": {"logIn": {"user": {"email": email}}}, "extensions": {"cost": cost(12)}}


@pytest.fixture
async def other_address(app: Starlette, oauth_issuer: OAuthIssuer) -> AsyncIterator[Api]:
    """The same server, reached from another IP address."""
    transport = httpx.ASGITransport(app=app, client=("198.51.100.23", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as c:
        yield Api(c, oauth_issuer)


async def new_account(api: Api) -> str:
    email = f"locked-{uuid.uuid4().hex[:8]}@example.com"
    await api.sign_up(email, PASSWORD)
    return email


async def test_ten_wrong_passwords_lock_the_account_from_every_address(
    api: Api, other_address: Api
) -> None:
    # given
    email = await new_account(api)
    wrong_password = answer(await log_in(api, email, WRONG))
    await fail(api, email, 9)

    # when
    right_password = answer(await log_in(other_address, email, PASSWORD))

    # then: exactly what a wrong password gets
    assert wrong_password == (
        200,
        {
            "data": {"logIn": None},
            "errors": [
                {
                    "message": "Wrong email or password.",
                    "locations": [{"line": 1, "column": 33}],
                    "path": ["logIn"],
                    "extensions": {"code": "UNAUTHENTICATED"},
                }
            ],
            "extensions": {"cost": cost(12)},
        },
    )
    assert right_password == wrong_password


async def test_the_lock_ends_after_fifteen_minutes(api: Api, clock: Clock) -> None:
    # given: a locked account, still locked a second before the end
    email = await new_account(api)
    await fail(api, email, 10)
    clock.advance(FIFTEEN_MINUTES - 1)
    still_locked = await log_in(api, email, PASSWORD)

    # when
    clock.advance(1)
    right_password = await log_in(api, email, PASSWORD)

    # then
    assert still_locked.codes == ["UNAUTHENTICATED"]
    assert answer(right_password) == accepted(email)


@pytest.mark.parametrize(
    ("first", "gap", "then", "locked"),
    [
        pytest.param(9, 0, 0, False, id="nine wrong passwords do not lock the account"),
        pytest.param(
            9, FIFTEEN_MINUTES, 9, False, id="failures older than fifteen minutes do not count"
        ),
        pytest.param(
            5, FIFTEEN_MINUTES - 60, 5, True, id="failures within fifteen minutes count together"
        ),
    ],
)
async def test_only_ten_wrong_passwords_within_fifteen_minutes_lock_the_account(
    api: Api, clock: Clock, first: int, gap: int, then: int, locked: bool
) -> None:
    # given: `first` failures, then `then` more `gap` seconds later
    email = await new_account(api)
    await fail(api, email, first)
    clock.advance(gap)
    await fail(api, email, then)

    # when
    right_password = await log_in(api, email, PASSWORD)

    # then
    if locked:
        assert right_password.codes == ["UNAUTHENTICATED"]
    else:
        assert answer(right_password) == accepted(email)


async def test_a_successful_login_starts_the_count_afresh(api: Api) -> None:
    # given
    email = await new_account(api)
    await fail(api, email, 9)
    assert answer(await log_in(api, email, PASSWORD)) == accepted(email)
    await fail(api, email, 9)

    # when
    right_password = await log_in(api, email, PASSWORD)

    # then
    assert answer(right_password) == accepted(email)


async def test_a_locked_account_still_verifies_the_password(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a locked account, and a record of what argon2 verifies
    email = await new_account(api)
    await fail(api, email, 10)
    passwords: Passwords = app.state.services.users.passwords
    verify = passwords.verify
    verified: list[tuple[bool, str]] = []

    async def recording(password_hash: str | None, password: str) -> bool:
        verified.append((password_hash is not None, password))
        return await verify(password_hash, password)

    monkeypatch.setattr(passwords, "verify", recording)

    # when
    refused = await log_in(api, email, PASSWORD)

    # then: the account's own hash was verified, as for an open account (so timing tells nothing)
    assert refused.codes == ["UNAUTHENTICATED"]
    assert verified == [(True, PASSWORD)]


async def test_locking_one_account_leaves_the_others_open(api: Api) -> None:
    # given
    locked = await new_account(api)
    other = await new_account(api)
    await fail(api, locked, 10)

    # when
    right_password = await log_in(api, other, PASSWORD)

    # then
    assert answer(right_password) == accepted(other)


@pytest.mark.slow
@needs_redis
async def test_failures_spread_over_every_worker_lock_the_account_on_every_worker(
    sqlite_servers: Servers, tmp_path: Path
) -> None:
    server = sqlite_servers.start()
    async with any_worker_api(server, tmp_path, seconds=30) as api:
        # given
        email = await new_account(api)
        failures = await asyncio.gather(*(log_in(api, email, WRONG) for _ in range(10)))
        assert {str(r.codes) for r in failures} == {"['UNAUTHENTICATED']"}

        # when
        after = await asyncio.gather(*(log_in(api, email, PASSWORD) for _ in range(6)))

        # then
        assert [answer(r) for r in after] == [answer(failures[0])] * 6


@pytest.mark.slow
async def test_every_file_a_fresh_server_writes_in_its_data_directory_is_private(
    tmp_path: Path,
) -> None:
    # given: a server started on an empty data directory, holding its SQLite database there
    data = tmp_path / "data"
    started = Servers(tmp_path, f"sqlite://{data / 'keyplane.sqlite3'}")
    try:
        server = started.start(workers=1, storage="")
        async with httpx.AsyncClient(base_url=server, timeout=10) as client:
            api = Api(client, OAuthIssuer.create(tmp_path / "jwks.json"))

            # when: it has written (so SQLite keeps its write-ahead log open)
            token = await api.sign_up()
            await api.create_project(token)
            modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in data.iterdir()}
    finally:
        started.stop_all()

    # then
    assert modes == {
        "keyplane.sqlite3": "0o600",
        "keyplane.sqlite3-wal": "0o600",
        "keyplane.sqlite3-shm": "0o600",
        "keyplane.sqlite3.credentials": "0o600",
        "keyplane.sqlite3.migrate-lock": "0o600",
    }
