"""Usage metering: counts exact under concurrency, before a flush (this process adds what it has
not written yet) and after one, across a SIGTERM restart of a real `keyplane serve`, and pruned
past their retention.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette

from keyplane.models import ApiKey, UsageBucket
from keyplane.services import build_services
from keyplane.settings import Settings
from keyplane.usage.buffer import UsageBuffer, minute_of
from tests.helpers import Api, Clock, Result, new_tenant
from tests.serve_process import free_port, wait_ready
from tests.usage_helpers import (
    DAY,
    HOURLY_FLUSH,
    KEY_USAGE,
    LIST_KEYS,
    MINUTE,
    PG_URL,
    TOTAL_REQUESTS,
    VIEWER,
    api_over,
    create_key,
    environment_usage,
    key_usage,
    period_start,
    range_of,
    send,
    totals,
)

pytestmark = HOURLY_FLUSH

# --- exact counts under load, flushing and pruning -----------------------------------------


async def hammer(
    app: Starlette, secret: str, *, clients: int, each: int, forbidden_every: int, env_id: str
) -> list[Result]:
    """`clients` concurrent HTTP clients, each sending `each` requests one after another;
    every `forbidden_every`-th request asks for something the key may not read."""

    async def one_client(number: int) -> list[Result]:
        transport = httpx.ASGITransport(app=app, client=(f"198.51.100.{number + 1}", 40000))
        results = []
        async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as c:
            api = api_over(c)
            for i in range(each):
                if i % forbidden_every == 0:
                    results.append(await api.gql(LIST_KEYS, {"id": env_id}, token=secret))
                else:
                    results.append(await api.gql(VIEWER, token=secret))
        return results

    batches = await asyncio.gather(*(one_client(n) for n in range(clients)))
    return [result for batch in batches for result in batch]


async def test_usage_is_exact_after_1000_requests_from_20_concurrent_clients(
    app: Starlette, api: Api, clock: Clock, usage: UsageBuffer
) -> None:
    # given: a key allowed 800 requests a minute, a fifth of whose requests are forbidden
    owner = await new_tenant(api)
    key_id, secret = await create_key(
        api, owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"], rate_limit=800
    )
    started = clock()

    # when
    results = await hammer(
        app, secret, clients=20, each=50, forbidden_every=5, env_id=owner.environment_id
    )

    # then: 800 admitted, of which those asking for keys were refused FORBIDDEN; 200 got 429
    admitted = [r for r in results if r.status == 200]
    expected = {
        "requests": 800,
        "forbidden": sum(r.codes == ["FORBIDDEN"] for r in admitted),
        "rateLimited": 200,
    }
    assert (len(admitted), [r.status for r in results].count(429)) == (800, 200)
    assert 0 < expected["forbidden"] < 800
    expected |= {"unauthorized": 0, "refused": expected["forbidden"] + 200}
    period = range_of(started, clock())

    # then, before a flush: nothing written yet, this process adds its pending counts
    assert await UsageBucket.filter(key_id=key_id).count() == 0
    before = await api.gql(KEY_USAGE, {"id": key_id, **period}, token=owner.token)
    assert before.ok()["apiKey"]["totalRequests"] == 800
    assert totals(before.ok()["apiKey"]["usage"]) == expected
    assert totals(await environment_usage(api, owner.token, owner.environment_id, period)) == (
        expected
    )

    # and after a flush: the rows hold the same counts, and reading does not count them twice
    await usage.flush()
    rows = await UsageBucket.filter(key_id=key_id).values(
        "requests", "unauthorized", "forbidden", "rate_limited"
    )
    assert {name: sum(row[name] for row in rows) for name in rows[0]} == {
        "requests": 800,
        "unauthorized": 0,
        "forbidden": expected["forbidden"],
        "rate_limited": 200,
    }
    assert (await ApiKey.get(id=key_id)).total_requests == 800
    after = await api.gql(KEY_USAGE, {"id": key_id, **period}, token=owner.token)
    assert after.ok()["apiKey"] == before.ok()["apiKey"]


@pytest.mark.usage_flush_seconds(0.1)
async def test_the_flusher_writes_counts_to_the_database_within_its_interval(
    api: Api, usage: UsageBuffer
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    await send(api, secret, 3)
    for _ in range(50):  # up to ten intervals, for a slow machine
        await asyncio.sleep(usage.interval / 5)
        if (await ApiKey.get(id=key_id)).total_requests == 3:
            break

    # then: written by the background flusher (in one or more flushes), not by a read
    stored = cast(
        "list[int]", await UsageBucket.filter(key_id=key_id).values_list("requests", flat=True)
    )
    assert (sum(stored), (await ApiKey.get(id=key_id)).total_requests) == (3, 3)


async def test_buckets_older_than_the_retention_are_pruned(
    api: Api, clock: Clock, usage: UsageBuffer
) -> None:
    # given: a key used 31 days ago, 29 days ago and now (keys, unlike dashboard sessions,
    # do not mind the clock going back)
    owner = await new_tenant(api)
    key_id, secret = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    for days_ago, requests in ((31, 1), (29, 2), (0, 3)):
        clock.offset = -days_ago * DAY
        await send(api, secret, requests)
    await usage.flush()

    # when
    pruned = await usage.prune(clock())

    # then
    assert usage.retention == timedelta(days=30)
    assert pruned == 1
    now = clock()
    today = period_start(now, DAY)
    points = await key_usage(api, owner.token, key_id, range_of(today - 31 * DAY, now, "DAY"))
    assert [p["requests"] for p in points] == [0] * 2 + [2] + [0] * 28 + [3]
    assert points[-1]["at"] == today
    read = await api.gql(TOTAL_REQUESTS, {"id": key_id}, token=owner.token)
    assert read.ok() == {"apiKey": {"totalRequests": 6}}


async def test_prune_keeps_the_minute_at_the_retention_boundary(
    app: Starlette, settings: Settings
) -> None:
    # given: buckets written straight through a buffer kept for 7 days, a minute apart around
    # the boundary (`app` provides the database)
    week = UsageBuffer(settings.database_url, retention=timedelta(days=7))
    now = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
    boundary = minute_of(now - timedelta(days=7))
    for minute in (boundary - MINUTE, boundary, boundary + MINUTE):
        week.admitted("key_boundary", "env_boundary", minute + timedelta(seconds=5))
    await week.flush()

    # when
    pruned = await week.prune(now)

    # then
    kept = await UsageBucket.filter(key_id="key_boundary").order_by("minute").values("minute")
    assert (pruned, kept) == (1, [{"minute": boundary}, {"minute": boundary + MINUTE}])


def test_the_retention_comes_from_the_settings(tmp_path: Path) -> None:
    # given
    settings = Settings.from_environ(
        {
            "KEYPLANE_ENV": "development",
            "KEYPLANE_DATA_DIR": str(tmp_path),
            "KEYPLANE_JWT_SECRET": "s" * 40,
            "KEYPLANE_USAGE_RETENTION_DAYS": "7",
        }
    )

    # when
    services = build_services(settings)

    # then
    assert services.usage.retention == timedelta(days=7)


# --- a real server: counts survive SIGTERM -------------------------------------------------


class Server:
    """One `keyplane serve` process (one worker, in-process rate limits) on a shared database."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.database_url = PG_URL or f"sqlite://{tmp_path / 'served.sqlite3'}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = tmp_path / "serve.log"
        self.jwt_secret = secrets.token_urlsafe(48)  # the same across restarts

    def start(self) -> str:
        port = free_port()
        env = {
            **os.environ,
            "KEYPLANE_DATA_DIR": str(self.tmp_path / "data"),
            "KEYPLANE_DATABASE_URL": self.database_url,
            "KEYPLANE_RATE_LIMIT_STORAGE": "memory://",
            "KEYPLANE_JWT_SECRET": self.jwt_secret,
        }
        env.pop("KEYPLANE_RATE_LIMITS", None)
        # A file, not a pipe: an undrained pipe fills up and blocks the server's logging.
        with self.log.open("ab") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "keyplane", "serve", "--workers", "1", "--port", str(port)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, self.process, self.log)
        return base

    def terminate(self) -> tuple[int, str]:
        """SIGTERM, then wait for the graceful shutdown; returns the exit status and the log."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout=30)
        self.process = None
        return status, self.log.read_text()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = Server(tmp_path)
    try:
        yield started
    finally:
        started.kill()


@pytest.mark.multiprocess
@pytest.mark.slow
async def test_counts_survive_a_sigterm_restart_of_a_real_server(server: Server) -> None:
    # given: a key allowed 10,000 requests a minute (the 100/minute tier would refuse some)
    sent = 300
    base = await asyncio.to_thread(server.start)
    started = datetime.now(UTC)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        api = api_over(client)
        owner = await new_tenant(api)
        key_id, secret = await create_key(
            api, owner.token, owner.environment_id, ["VIEW_ANALYTICS"], rate_limit=10_000
        )
        semaphore = asyncio.Semaphore(20)

        async def one() -> int:
            async with semaphore:
                return (await api.gql(VIEWER, token=secret)).status

        statuses = await asyncio.gather(*(one() for _ in range(sent)))

    # when: SIGTERM right after the last answer, then a new process on the same database
    exit_status, log = await asyncio.to_thread(server.terminate)
    base = await asyncio.to_thread(server.start)
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        period = range_of(started, datetime.now(UTC))
        read = await api_over(client).gql(KEY_USAGE, {"id": key_id, **period}, token=owner.token)

    # then
    # (uvicorn shuts down gracefully, then raises the signal again so that its status shows it)
    assert (statuses, exit_status) == ([200] * sent, -signal.SIGTERM)
    assert "Application shutdown complete." in log
    record = read.ok()["apiKey"]
    assert record["totalRequests"] == sent
    assert totals(record["usage"]) == {
        "requests": sent,
        "refused": 0,
        "unauthorized": 0,
        "forbidden": 0,
        "rateLimited": 0,
    }


# --- a flush committing while a key is read ---------------------------------------------


KEY_TOTAL = "query($id: ID!) { apiKey(id: $id) { totalRequests } }"
PAGE_TOTALS = (
    "query($id: ID!) { environment(id: $id) { apiKeys { edges { node { totalRequests } } } } }"
)


@dataclass(frozen=True)
class UsedKey:
    """A key that made three requests, its environment and its owner's session token."""

    owner: str
    environment_id: str
    id: str
    secret: str


async def _key_with_three_requests(api: Api) -> UsedKey:
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    key_id, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    for _ in range(3):
        (await api.gql("{ viewer { kind } }", token=secret)).ok()
    return UsedKey(owner, env, key_id, secret)


def _flush_before_next(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, owner: type, method: str
) -> None:
    """Makes the next call of `owner.method` flush the pending counts (a flush that begins and
    commits) before it runs."""
    real = getattr(owner, method)

    async def flush_first(self: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(owner, method, real)
        await app.state.services.usage.flush()
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(owner, method, flush_first)


async def test_a_flush_landing_while_a_key_is_read_loses_no_count(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: three unflushed requests, and a flush that commits while the key is being read
    # (once its access has been checked)
    from keyplane.access import Access

    key = await _key_with_three_requests(api)
    owner, key_id = key.owner, key.id
    _flush_before_next(app, monkeypatch, Access, "scopes_in")

    # when
    read = await api.gql(
        "query($id: ID!) { apiKey(id: $id) { totalRequests } }", {"id": key_id}, token=owner
    )

    # then
    assert read.ok()["apiKey"]["totalRequests"] == 3


async def test_the_calling_key_reads_its_own_counts_after_a_flush_mid_request(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: the key's row is read (or kept) by authentication, then a flush commits
    from keyplane.http import GraphQLView

    secret = (await _key_with_three_requests(api)).secret
    _flush_before_next(app, monkeypatch, GraphQLView, "get_context")

    # when
    read = await api.gql("{ viewer { apiKey { totalRequests } } }", token=secret)

    # then: the three before, and this one
    assert read.ok()["viewer"]["apiKey"]["totalRequests"] == 4


def _flush_while_counters_are_read(app: Starlette, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Makes the next read of stored key counters run a flush (which begins and commits) after
    its query and before the counts are added up; returns the ids that read asked for, once it
    has happened."""
    from keyplane.records import Lookups

    real_by_ids = Lookups.by_ids
    read: list[str] = []

    async def flush_while_reading(self: Lookups, table: str, columns: str, ids: list[str]) -> Any:
        rows = await real_by_ids(self, table, columns, ids)
        if table == "api_key" and "total_requests" in columns:
            monkeypatch.setattr(Lookups, "by_ids", real_by_ids)
            read.extend(ids)
            await app.state.services.usage.flush()
        return rows

    monkeypatch.setattr(Lookups, "by_ids", flush_while_reading)
    return read


async def _flush_paused(
    app: Starlette, monkeypatch: pytest.MonkeyPatch, *, committed: bool
) -> asyncio.Task[None]:
    """A flush of what is pending, started and paused for a moment, its transaction
    committed (`committed`) or not begun yet."""
    real_write = UsageBuffer._write
    paused = asyncio.Event()

    async def paused_write(self: UsageBuffer, taken: Any) -> None:
        if committed:
            await real_write(self, taken)
        paused.set()
        await asyncio.sleep(0.2)
        if not committed:
            await real_write(self, taken)

    monkeypatch.setattr(UsageBuffer, "_write", paused_write)
    flush = asyncio.create_task(app.state.services.usage.flush())
    await paused.wait()
    return flush


@pytest.mark.parametrize("committed", [False, True], ids=["before commit", "after commit"])
@pytest.mark.parametrize("page", [False, True], ids=["one key", "a page of keys"])
async def test_counters_read_while_a_flush_is_in_progress_count_each_request_once(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch, committed: bool, page: bool
) -> None:
    # given: three unflushed requests, and a flush of them in progress
    key = await _key_with_three_requests(api)
    flush = await _flush_paused(app, monkeypatch, committed=committed)

    # when
    if page:
        read = await api.gql(PAGE_TOTALS, {"id": key.environment_id}, token=key.owner)
    else:
        read = await api.gql(KEY_TOTAL, {"id": key.id}, token=key.owner)

    # then
    await flush
    assert read.ok() == (
        {"environment": {"apiKeys": {"edges": [{"node": {"totalRequests": 3}}]}}}
        if page
        else {"apiKey": {"totalRequests": 3}}
    )


@pytest.mark.parametrize(
    "by_the_key", [False, True], ids=["read by its owner", "read by the calling key itself"]
)
async def test_counters_read_while_a_flush_commits_count_each_request_once(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch, by_the_key: bool
) -> None:
    # given: three unflushed requests, and a flush that begins and commits while the key's
    # stored counters are being read
    key = await _key_with_three_requests(api)
    read_while_flushing = _flush_while_counters_are_read(app, monkeypatch)

    # when
    if by_the_key:
        read = await api.gql("{ viewer { apiKey { totalRequests } } }", token=key.secret)
    else:
        read = await api.gql(KEY_TOTAL, {"id": key.id}, token=key.owner)

    # then: the flush did land in that read, and each request is counted once (the calling
    # key's own request too)
    assert read_while_flushing == [key.id]
    assert read.ok() == (
        {"viewer": {"apiKey": {"totalRequests": 4}}}
        if by_the_key
        else {"apiKey": {"totalRequests": 3}}
    )


async def test_a_page_of_keys_shows_flushed_and_unflushed_requests_together(
    api: Api, app: Starlette
) -> None:
    # given: three requests flushed, then two not yet
    key = await _key_with_three_requests(api)
    owner, env, secret = key.owner, key.environment_id, key.secret
    await app.state.services.usage.flush()
    for _ in range(2):
        (await api.gql("{ viewer { kind } }", token=secret)).ok()

    # when
    page = await api.gql(
        "query($id: ID!) { environment(id: $id) { apiKeys { edges { node { totalRequests } } } } }",
        {"id": env},
        token=owner,
    )

    # then
    assert page.ok() == {"environment": {"apiKeys": {"edges": [{"node": {"totalRequests": 5}}]}}}
