"""On PostgreSQL + Redis, a keyed request makes one Redis round trip: the credentials' version,
the moving window's acquire and its read-back for the headers, in one script.

A worker trusts the key it kept under the version it saw last; the script compares that
version with Redis' before it charges anything. When another worker has moved the version (a
revocation), nothing is charged, the key is verified again, and the request answers 401:
revocation holds from the next request, and a refused key's bucket is never charged.
(Counted with Redis' MONITOR, filtered to this test's database and to what clients sent: the
commands a script runs inside Redis are not round trips.)
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, cast

import pytest
import redis.asyncio as redis
from limits.aio.storage import RedisStorage
from starlette.applications import Starlette
from tortoise import connections

from keyplane.auth.changes import REDIS_KEY, RedisVersion
from keyplane.ratelimit.redis_window import RedisWindows, VersionMoved
from keyplane.settings import Settings
from tests.conftest import PG_URL
from tests.helpers import Api
from tests.serve_process import REDIS_URL as SHARED_REDIS_URL
from tests.serve_process import needs_redis

# MONITOR sees every database: these tests count on one that no other test module uses (the
# multi-process tests take 15, 14... per xdist worker).
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
REDIS_URL = (
    SHARED_REDIS_URL.rsplit("/", 1)[0] + f"/{7 - int(_WORKER.removeprefix('gw') or 0)}"
    if SHARED_REDIS_URL
    else ""
)
needs_postgres_and_redis = pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="KEYPLANE_TEST_DATABASE_URL (PostgreSQL) and KEYPLANE_TEST_REDIS_URL are not both set",
)
VIEWER = "{ viewer { kind apiKey { id } } }"
REQUESTS = 12


@pytest.fixture
async def settings(settings: Settings) -> Settings:
    client = redis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    await client.aclose()
    return replace(settings, rate_limit_storage=REDIS_URL)


async def _sent_to_redis(action: Callable[[], Awaitable[None]]) -> list[str]:
    """The commands clients sent to this test's Redis database while `action` ran."""
    client, marking = redis.Redis.from_url(REDIS_URL), redis.Redis.from_url(REDIS_URL)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    marker = f"end-{uuid.uuid4().hex}"
    seen: list[str] = []
    await marking.ping()  # connected (and its SELECT sent) before MONITOR starts
    async with client.monitor() as monitor:
        await asyncio.sleep(0.05)  # MONITOR is on before the action starts
        await action()
        await marking.echo(marker)
        while True:
            info = await asyncio.wait_for(monitor.next_command(), timeout=5)
            if marker in info["command"]:
                break
            if info["db"] == db and info["client_type"] != "lua":
                seen.append(info["command"].split(" ", 1)[0].upper())
    await client.aclose()
    await marking.aclose()
    return seen


async def _window_length(key_id: str) -> int:
    """The entries in the key's moving window (limits' list in Redis)."""
    client = redis.Redis.from_url(REDIS_URL)
    keys = [k for k in await client.keys("*") if key_id.encode() in k]
    assert len(keys) == 1, keys
    length = int(await client.llen(keys[0]))
    await client.aclose()
    return length


@needs_postgres_and_redis
async def test_each_keyed_request_makes_exactly_one_redis_round_trip(
    app: Starlette, api: Api
) -> None:
    # given: a key this worker has verified and kept
    owner = await api.sign_up()
    env = await api.create_environment(owner, await api.create_project(owner))
    _, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    (await api.gql(VIEWER, token=secret)).ok()

    async def requests() -> None:
        for _ in range(REQUESTS):
            (await api.gql(VIEWER, token=secret)).ok()

    # when
    commands = await _sent_to_redis(requests)

    # then
    assert commands == ["EVALSHA"] * REQUESTS


@needs_postgres_and_redis
async def test_a_key_revoked_by_another_worker_is_refused_on_the_next_request_uncharged(
    app: Starlette, api: Api
) -> None:
    # given: this worker keeps the key; another worker revokes it (row, then version)
    owner = await api.sign_up()
    env = await api.create_environment(owner, await api.create_project(owner))
    key_id, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    for _ in range(3):
        (await api.gql(VIEWER, token=secret)).ok()
    charged = await _window_length(key_id)
    await connections.get("default").execute_query(
        "UPDATE api_key SET revoked_at = NOW() WHERE id = $1", [key_id]
    )
    other_worker = RedisVersion(REDIS_URL)
    await other_worker.advance()
    await other_worker.close()

    # when
    answer = await api.gql(VIEWER, token=secret)

    # then
    assert answer.status == 401
    assert await _window_length(key_id) == charged == 3


@needs_postgres_and_redis
async def test_a_moved_version_with_the_key_still_valid_costs_a_second_trip_and_charges_once(
    app: Starlette, api: Api
) -> None:
    # given
    owner = await api.sign_up()
    env = await api.create_environment(owner, await api.create_project(owner))
    key_id, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    first = await api.gql(VIEWER, token=secret)
    first.ok()
    other_worker = RedisVersion(REDIS_URL)
    await other_worker.advance()
    await other_worker.close()

    # when
    answers = []

    async def request() -> None:
        answers.append(await api.gql(VIEWER, token=secret))

    commands = await _sent_to_redis(request)

    # then: the stale trust was refused, the key verified again, then charged once
    answers[0].ok()
    assert commands == ["EVALSHA", "EVALSHA"]
    assert await _window_length(key_id) == 2
    remaining = int(first.headers["x-ratelimit-remaining"])
    assert int(answers[0].headers["x-ratelimit-remaining"]) == remaining - 1


@needs_postgres_and_redis
async def test_when_redis_fails_a_kept_key_is_read_again_before_the_request_is_let_through(
    app: Starlette, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a kept key, revoked in the database while the version could not move
    owner = await api.sign_up()
    env = await api.create_environment(owner, await api.create_project(owner))
    key_id, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    (await api.gql(VIEWER, token=secret)).ok()
    await connections.get("default").execute_query(
        "UPDATE api_key SET revoked_at = NOW() WHERE id = $1", [key_id]
    )
    limiter = app.state.services.limiter

    async def unreachable(*args: object, **kwargs: object) -> None:
        raise ConnectionError("redis is down")

    monkeypatch.setattr(limiter._windows, "charge", unreachable)

    # when: the rate limit fails open
    answer = await api.gql(VIEWER, token=secret)

    # then: the version was unknown, so the key was read again, and refused
    assert answer.status == 401
    assert limiter.storage_failures >= 1


@needs_redis
async def test_the_script_answers_as_limits_own_redis_window_for_one_sequence_of_hits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """limits' Redis storage (acquire, then read the window) and the one script get the same
    hits at the same clock readings, on two keys of one Redis: every answer is the same."""
    client = redis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    theirs = RedisStorage("async+" + REDIS_URL, implementation="redispy")
    ours_storage = RedisStorage("async+" + REDIS_URL, implementation="redispy")
    ours = RedisWindows(ours_storage, REDIS_KEY)
    pick = random.Random(14)
    admitted = 0
    for step in range(600):
        now[0] += pick.choice([0.0, 0.25, 1.0, 3.0]) * (20 if step % 150 == 0 else 1)
        limit = pick.choice([1, 3, 10])
        amount = pick.choice([1, 1, 2, 5])
        expected = await theirs.acquire_entry("theirs", limit, 10, amount)
        their_start, their_used = await theirs.get_moving_window("theirs", limit, 10)
        charged = await ours.charge(
            [("ours", limit, 10, amount)], now=now[0], expected_version=None
        )
        assert (charged.refused == 0) == expected, step
        assert charged.used == their_used, step
        # and ours keeps only the window: what has left it is gone from the list
        assert min(await client.llen("LIMITS:ours"), limit) == charged.used, step
        if their_used:
            assert charged.start == their_start, step
        admitted += expected
    assert 100 < admitted < 500
    # and a version other than the one in Redis charges nothing
    with pytest.raises(VersionMoved):
        await ours.charge([("ours", 10, 10, 1)], now=now[0], expected_version=12345)
    await ours.close()
    await cast(Any, theirs.bridge).get_connection().aclose()
    await client.flushdb()
    await client.aclose()
