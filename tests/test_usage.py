"""Usage metering through HTTP and GraphQL: per-key, per-minute buckets and the series of them.

A key's bucket counts the requests it made that were admitted, and its refusals by reason: 401
(the key was presented revoked or expired), 403 (an admitted request answered FORBIDDEN) and
429 (over the rate limit). `apiKey.usage` and `environment.usage` return one point per period,
empty periods included; an environment's series sums its keys, deleted ones too. The counts are
exact under concurrency, before a flush (this process adds what it has not written yet) and
after one, and across a SIGTERM restart of a real `keyplane serve`.

The background flusher is slowed down to once an hour here, so each test decides when counts
reach the database (`await usage.flush()`); one test restores a short interval to watch it work.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from keyplane.models import ApiKey, UsageBucket
from keyplane.services import build_services
from keyplane.settings import Settings
from keyplane.usage.buffer import UsageBuffer, minute_of
from tests.helpers import Api, Clock, Result
from tests.serve_process import free_port, wait_ready

PG_URL = os.environ.get("KEYPLANE_TEST_DATABASE_URL", "")
TIGHT_KEY_TIER = "api_key=5/minute;oauth=5000/minute;jwt=5000/minute;anonymous=5000/minute"
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
STEPS = {"MINUTE": MINUTE, "HOUR": HOUR, "DAY": DAY}
LAST_SECOND = timedelta(seconds=59)  # from the start of a minute to its last second: one point

POINT_FIELDS = "at requests refused unauthorized forbidden rateLimited"

KEY_USAGE = f"""
query KeyUsage($id: ID!, $from: DateTime!, $to: DateTime!, $granularity: Granularity!) {{
  apiKey(id: $id) {{
    totalRequests
    usage(from: $from, to: $to, granularity: $granularity) {{ {POINT_FIELDS} }}
  }}
}}
"""

ENVIRONMENT_USAGE = f"""
query EnvironmentUsage($id: ID!, $from: DateTime!, $to: DateTime!, $granularity: Granularity!) {{
  environment(id: $id) {{
    usage(from: $from, to: $to, granularity: $granularity) {{ {POINT_FIELDS} }}
  }}
}}
"""

CREATE_KEY = """
mutation CreateKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id } secret }
}
"""

REVOKE_KEY = "mutation RevokeKey($id: ID!) { revokeApiKey(id: $id) { status } }"
DELETE_KEY = "mutation DeleteKey($id: ID!) { deleteApiKey(id: $id) { id } }"
TOTAL_REQUESTS = "query TotalRequests($id: ID!) { apiKey(id: $id) { totalRequests } }"

VIEWER = "{ viewer { kind } }"
# Needs MANAGE_PROJECT or VIEW_ANALYTICS: a GENERATE_DOCUMENTS key is admitted, then refused.
LIST_KEYS = (
    "query ListKeys($id: ID!) { environment(id: $id) { apiKeys(first: 1) { edges { cursor } } } }"
)


# --- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def flush_seconds() -> float:
    return 3600.0


@pytest.fixture
def settings(settings: Settings, flush_seconds: float) -> Settings:
    return replace(settings, usage_flush_seconds=flush_seconds)


@pytest.fixture
def usage(app: Starlette) -> UsageBuffer:
    buffer: UsageBuffer = app.state.services.usage
    return buffer


@dataclass(frozen=True)
class Tenant:
    """A user who owns a project with one environment."""

    token: str
    project_id: str
    environment_id: str


async def new_tenant(api: Api) -> Tenant:
    token = await api.sign_up()
    project_id = await api.create_project(token)
    return Tenant(token, project_id, await api.create_environment(token, project_id))


async def create_key(
    api: Api,
    token: str,
    environment_id: str,
    scopes: list[str],
    *,
    expires_at: datetime | None = None,
    rate_limit: int | None = None,
) -> tuple[str, str]:
    """Returns (key id, secret)."""
    result = await api.gql(
        CREATE_KEY,
        {
            "input": {
                "environmentId": environment_id,
                "name": "server",
                "scopes": scopes,
                "expiresAt": None if expires_at is None else expires_at.isoformat(),
                "rateLimitPerMinute": rate_limit,
            }
        },
        token=token,
    )
    payload = result.ok()["createApiKey"]
    return str(payload["apiKey"]["id"]), str(payload["secret"])


def period_start(moment: datetime, step: timedelta) -> datetime:
    """The UTC minute, hour or day that holds `moment`."""
    seconds = step.total_seconds()
    return datetime.fromtimestamp(moment.timestamp() // seconds * seconds, UTC)


def move_to_next_period(clock: Clock, step: timedelta) -> datetime:
    """Move the clock one second past the start of the next period, which it returns.

    Requests made right after all land in that period, whatever the wall clock does meanwhile.
    Dashboard tokens must be issued before (their `iat` is checked against the real time).
    """
    now = clock()
    start = period_start(now, step) + step
    clock.advance((start - now).total_seconds() + 1)
    return start


def point(
    at: datetime,
    *,
    requests: int = 0,
    unauthorized: int = 0,
    forbidden: int = 0,
    rate_limited: int = 0,
) -> dict[str, Any]:
    return {
        "at": at,
        "requests": requests,
        "refused": unauthorized + forbidden + rate_limited,
        "unauthorized": unauthorized,
        "forbidden": forbidden,
        "rateLimited": rate_limited,
    }


def range_of(start: datetime, end: datetime, granularity: str = "MINUTE") -> dict[str, str]:
    return {"from": start.isoformat(), "to": end.isoformat(), "granularity": granularity}


def series(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**p, "at": datetime.fromisoformat(p["at"])} for p in points]


async def key_usage(
    api: Api, token: str, key_id: str, period: dict[str, str]
) -> list[dict[str, Any]]:
    result = await api.gql(KEY_USAGE, {"id": key_id, **period}, token=token)
    return series(result.ok()["apiKey"]["usage"])


async def environment_usage(
    api: Api, token: str, environment_id: str, period: dict[str, str]
) -> list[dict[str, Any]]:
    result = await api.gql(ENVIRONMENT_USAGE, {"id": environment_id, **period}, token=token)
    return series(result.ok()["environment"]["usage"])


def totals(points: list[dict[str, Any]]) -> dict[str, int]:
    fields = ("requests", "refused", "unauthorized", "forbidden", "rateLimited")
    return {name: sum(p[name] for p in points) for name in fields}


async def send(
    api: Api,
    secret: str,
    times: int,
    document: str = VIEWER,
    variables: dict[str, Any] | None = None,
) -> list[int]:
    return [(await api.gql(document, variables, token=secret)).status for _ in range(times)]


def assert_bad_input(result: Result, field: str) -> None:
    assert result.status == 200
    assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT", "field": field}]


# --- what a bucket counts ------------------------------------------------------------------


async def test_admitted_requests_count_in_the_minute_they_arrive(
    api: Api, clock: Clock, usage: UsageBuffer
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    first = move_to_next_period(clock, MINUTE)
    await send(api, secret, 2)
    await usage.flush()
    clock.advance(120)
    await send(api, secret, 3)

    # when: a range that starts and ends inside minutes, read with part of it still pending
    period = range_of(first + timedelta(seconds=30), first + 3 * MINUTE + timedelta(seconds=5))
    points = await key_usage(api, owner.token, key_id, period)

    # then
    assert points == [
        point(first, requests=2),
        point(first + MINUTE),
        point(first + 2 * MINUTE, requests=3),
        point(first + 3 * MINUTE),
    ]


async def test_a_revoked_or_expired_key_presented_counts_as_unauthorized_not_as_a_request(
    api: Api, clock: Clock
) -> None:
    # given: one key revoked, another that expires half a minute into the first minute
    owner = await new_tenant(api)
    first = move_to_next_period(clock, MINUTE)
    revoked_id, revoked = await create_key(
        api, owner.token, owner.environment_id, ["MANAGE_PROJECT"]
    )
    expiring_id, expiring = await create_key(
        api,
        owner.token,
        owner.environment_id,
        ["MANAGE_PROJECT"],
        expires_at=first + timedelta(seconds=30),
    )
    (await api.gql(REVOKE_KEY, {"id": revoked_id}, token=owner.token)).ok()

    # when
    refused_revoked = await send(api, revoked, 2)
    admitted = await send(api, expiring, 1)
    clock.advance(60)
    refused_expired = await send(api, expiring, 3)

    # then
    assert (refused_revoked, admitted, refused_expired) == ([401] * 2, [200], [401] * 3)
    period = range_of(first, first + MINUTE)
    assert await key_usage(api, owner.token, revoked_id, period) == [
        point(first, unauthorized=2),
        point(first + MINUTE),
    ]
    assert await key_usage(api, owner.token, expiring_id, period) == [
        point(first, requests=1),
        point(first + MINUTE, unauthorized=3),
    ]
    read = await api.gql(TOTAL_REQUESTS, {"id": revoked_id}, token=owner.token)
    assert read.ok() == {"apiKey": {"totalRequests": 0}}


async def test_a_secret_that_matches_no_key_is_counted_for_no_key(api: Api, clock: Clock) -> None:
    # given
    owner = await new_tenant(api)
    _, secret = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    first = move_to_next_period(clock, MINUTE)
    unknown = secret[:10] + ("b" if secret[10] == "a" else "a") + secret[11:]

    # when
    statuses = await send(api, unknown, 3)

    # then
    assert statuses == [401] * 3
    period = range_of(first, first + MINUTE)
    assert await environment_usage(api, owner.token, owner.environment_id, period) == [
        point(first),
        point(first + MINUTE),
    ]


async def test_an_admitted_request_answered_forbidden_counts_as_a_request_and_a_refusal(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await create_key(
        api, owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"]
    )
    first = move_to_next_period(clock, MINUTE)

    # when
    allowed = await api.gql(VIEWER, token=secret)
    denied = [
        await api.gql(LIST_KEYS, {"id": owner.environment_id}, token=secret) for _ in range(2)
    ]

    # then
    assert (allowed.status, allowed.errors) == (200, [])
    assert [(r.status, r.codes) for r in denied] == [(200, ["FORBIDDEN"])] * 2
    period = range_of(first, first + LAST_SECOND)
    assert await key_usage(api, owner.token, key_id, period) == [
        point(first, requests=3, forbidden=2)
    ]


@pytest.mark.parametrize("rate_limits", [TIGHT_KEY_TIER])
async def test_requests_over_the_rate_limit_count_as_rate_limited_not_as_requests(
    api: Api, clock: Clock
) -> None:
    # given: the API-key tier allows 5 requests a minute
    owner = await new_tenant(api)
    key_id, secret = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    first = move_to_next_period(clock, MINUTE)

    # when
    statuses = await send(api, secret, 7)

    # then
    assert statuses == [200] * 5 + [429] * 2
    read = await api.gql(
        KEY_USAGE, {"id": key_id, **range_of(first, first + LAST_SECOND)}, token=owner.token
    )
    record = read.ok()["apiKey"]
    assert (record["totalRequests"], series(record["usage"])) == (
        5,
        [point(first, requests=5, rate_limited=2)],
    )


# --- series --------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["MINUTE", "HOUR", "DAY"])
async def test_a_series_has_one_point_per_period_and_zeros_where_nothing_happened(
    api: Api, clock: Clock, usage: UsageBuffer, granularity: str
) -> None:
    # given: a key used in the first and the third period (read by another key: a dashboard
    # session would not survive the clock moving days ahead)
    step = STEPS[granularity]
    owner = await new_tenant(api)
    key_id, secret = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    _, reader = await create_key(api, owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    first = move_to_next_period(clock, step)
    await send(api, secret, 1)
    await usage.flush()
    clock.advance((2 * step).total_seconds())
    await send(api, secret, 2)

    # when
    points = await key_usage(api, reader, key_id, range_of(first, first + 3 * step, granularity))

    # then
    assert points == [
        point(first, requests=1),
        point(first + step),
        point(first + 2 * step, requests=2),
        point(first + 3 * step),
    ]


async def test_an_environment_sums_its_keys_including_a_deleted_keys_history(
    api: Api, clock: Clock, usage: UsageBuffer
) -> None:
    # given: two keys here, one of them deleted after use, and a key in another environment
    owner = await new_tenant(api)
    other_environment = await api.create_environment(owner.token, owner.project_id)
    _, kept = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    deleted_id, deleted = await create_key(
        api, owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"]
    )
    _, elsewhere = await create_key(api, owner.token, other_environment, ["MANAGE_PROJECT"])
    first = move_to_next_period(clock, MINUTE)
    await send(api, kept, 2)
    await send(api, deleted, 3)
    await send(api, elsewhere, 4)
    await usage.flush()
    clock.advance(60)
    await send(api, deleted, 1, LIST_KEYS, {"id": owner.environment_id})
    await send(api, kept, 1)

    # when
    (await api.gql(DELETE_KEY, {"id": deleted_id}, token=owner.token)).ok()
    period = range_of(first, first + 2 * MINUTE)
    points = await environment_usage(api, owner.token, owner.environment_id, period)

    # then
    assert points == [
        point(first, requests=5),
        point(first + MINUTE, requests=2, forbidden=1),
        point(first + 2 * MINUTE),
    ]
    gone = await api.gql(KEY_USAGE, {"id": deleted_id, **period}, token=owner.token)
    assert (gone.data, gone.codes) == ({"apiKey": None}, ["NOT_FOUND"])


# --- range checks --------------------------------------------------------------------------


@pytest.mark.parametrize("to_offset", [timedelta(0), -MINUTE], ids=["equal", "before"])
@pytest.mark.parametrize("document", [KEY_USAGE, ENVIRONMENT_USAGE], ids=["key", "environment"])
async def test_a_range_that_does_not_start_before_it_ends_is_refused(
    api: Api, document: str, to_offset: timedelta
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    object_id = key_id if document == KEY_USAGE else owner.environment_id
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    # when
    result = await api.gql(
        document, {"id": object_id, **range_of(start, start + to_offset)}, token=owner.token
    )

    # then
    assert_bad_input(result, "from")
    assert list(result.data.values()) == [None]


@pytest.mark.parametrize("granularity", ["MINUTE", "HOUR", "DAY"])
async def test_a_series_may_hold_10000_points_and_no_more(api: Api, granularity: str) -> None:
    # given
    step = STEPS[granularity]
    owner = await new_tenant(api)
    start = datetime(2001, 1, 1, tzinfo=UTC)
    variables = {"id": owner.environment_id, "from": start.isoformat(), "granularity": granularity}

    # when
    largest = await api.gql(
        ENVIRONMENT_USAGE,
        {**variables, "to": (start + 9_999 * step).isoformat()},
        token=owner.token,
    )
    too_large = await api.gql(
        ENVIRONMENT_USAGE,
        {**variables, "to": (start + 10_000 * step).isoformat()},
        token=owner.token,
    )

    # then
    points = series(largest.ok()["environment"]["usage"])
    assert (len(points), points[0]["at"], points[-1]["at"]) == (
        10_000,
        start,
        start + 9_999 * step,
    )
    assert_bad_input(too_large, "to")
    assert too_large.data == {"environment": None}


# --- who may read usage --------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["MANAGE_PROJECT", "VIEW_ANALYTICS"])
async def test_a_key_with_manage_project_or_view_analytics_reads_its_environments_usage(
    api: Api, clock: Clock, scope: str
) -> None:
    # given
    owner = await new_tenant(api)
    used_id, used = await create_key(api, owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])
    _, reader = await create_key(api, owner.token, owner.environment_id, [scope])
    first = move_to_next_period(clock, MINUTE)
    await send(api, used, 2)

    # when
    period = range_of(first, first + LAST_SECOND)
    of_key = await key_usage(api, reader, used_id, period)
    of_environment = await environment_usage(api, reader, owner.environment_id, period)

    # then: the environment's series also holds the reader's own two requests
    assert of_key == [point(first, requests=2)]
    assert of_environment == [point(first, requests=4)]


@pytest.mark.parametrize("document", [KEY_USAGE, ENVIRONMENT_USAGE], ids=["key", "environment"])
async def test_a_key_without_manage_project_or_view_analytics_may_not_read_usage(
    api: Api, document: str
) -> None:
    # given
    owner = await new_tenant(api)
    other_id, _ = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    _, generator = await create_key(
        api, owner.token, owner.environment_id, ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES"]
    )
    object_id = other_id if document == KEY_USAGE else owner.environment_id
    start = datetime(2026, 3, 1, tzinfo=UTC)

    # when
    result = await api.gql(
        document, {"id": object_id, **range_of(start, start + HOUR)}, token=generator
    )

    # then
    assert (result.status, result.codes) == (200, ["FORBIDDEN"])
    assert list(result.data.values()) == [None]


async def test_a_key_without_manage_project_or_view_analytics_may_not_read_its_own_usage(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await create_key(
        api, owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"]
    )
    start = datetime(2026, 3, 1, tzinfo=UTC)

    # when
    result = await api.gql(KEY_USAGE, {"id": key_id, **range_of(start, start + HOUR)}, token=secret)

    # then
    assert (result.status, result.data, result.codes) == (200, {"apiKey": None}, ["FORBIDDEN"])


@pytest.mark.parametrize("document", [KEY_USAGE, ENVIRONMENT_USAGE], ids=["key", "environment"])
async def test_usage_outside_the_callers_reach_is_not_found(api: Api, document: str) -> None:
    # given: a key of another environment of the same project, and another tenant's owner
    owner = await new_tenant(api)
    key_id, _ = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    other_environment = await api.create_environment(owner.token, owner.project_id)
    _, neighbour_key = await create_key(api, owner.token, other_environment, ["MANAGE_PROJECT"])
    stranger = await new_tenant(api)
    object_id = key_id if document == KEY_USAGE else owner.environment_id
    variables = {"id": object_id, **range_of(datetime(2026, 3, 1, tzinfo=UTC), datetime.now(UTC))}

    # when
    by_key = await api.gql(document, variables, token=neighbour_key)
    by_stranger = await api.gql(document, variables, token=stranger.token)

    # then
    for result in (by_key, by_stranger):
        assert (result.status, result.codes) == (200, ["NOT_FOUND"])
        assert list(result.data.values()) == [None]


@pytest.mark.parametrize("document", [KEY_USAGE, ENVIRONMENT_USAGE], ids=["key", "environment"])
async def test_usage_is_not_read_without_credentials(api: Api, document: str) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await create_key(api, owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    object_id = key_id if document == KEY_USAGE else owner.environment_id
    start = datetime(2026, 3, 1, tzinfo=UTC)

    # when
    result = await api.gql(document, {"id": object_id, **range_of(start, start + HOUR)})

    # then
    assert (result.status, result.codes) == (200, ["UNAUTHENTICATED"])
    assert list(result.data.values()) == [None]


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


@pytest.mark.parametrize("flush_seconds", [0.1])
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
    stored = await UsageBucket.filter(key_id=key_id).values_list("requests", flat=True)
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


def api_over(client: httpx.AsyncClient) -> Api:
    return Api(client, oauth=None)  # type: ignore[arg-type]  # these callers use no OAuth tokens


@pytest.mark.multiprocess
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


async def _key_with_three_requests(api: Api) -> tuple[str, str, str]:
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    key_id, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    for _ in range(3):
        (await api.gql("{ viewer { kind } }", token=secret)).ok()
    return owner, key_id, secret


async def test_a_flush_landing_while_a_key_is_read_loses_no_count(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: three unflushed requests, and a flush that commits while the key is being read
    from keyplane.access import Access

    owner, key_id, _ = await _key_with_three_requests(api)
    usage = app.state.services.usage
    real_scopes_in = Access.scopes_in

    async def flush_midway(self: Access, **where: str) -> Any:
        monkeypatch.setattr(Access, "scopes_in", real_scopes_in)
        await usage.flush()
        return await real_scopes_in(self, **where)

    monkeypatch.setattr(Access, "scopes_in", flush_midway)

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
    _, _, secret = await _key_with_three_requests(api)
    usage = app.state.services.usage
    from keyplane.http import GraphQLView

    real_get_context = GraphQLView.get_context

    async def flush_after_authentication(self: Any, request: Any, response: Any) -> Any:
        await usage.flush()
        return await real_get_context(self, request, response)

    monkeypatch.setattr(GraphQLView, "get_context", flush_after_authentication)

    # when
    read = await api.gql("{ viewer { apiKey { totalRequests } } }", token=secret)

    # then: the three before, and this one
    assert read.ok()["viewer"]["apiKey"]["totalRequests"] == 4


async def test_the_calling_key_counts_right_when_a_flush_commits_while_it_is_read(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: three unflushed requests, and a flush that commits just before authentication
    # reads the key's row (so the row read already holds them)
    _, _, secret = await _key_with_three_requests(api)
    services = app.state.services
    services.credentials.keys.clear()  # nothing kept: this request reads the row
    from keyplane.records import Lookups

    real_key_by_hash = Lookups.key_by_hash

    async def flush_then_read(self: Lookups, secret_hash: str) -> Any:
        monkeypatch.setattr(Lookups, "key_by_hash", real_key_by_hash)
        await services.usage.flush()
        return await real_key_by_hash(self, secret_hash)

    monkeypatch.setattr(Lookups, "key_by_hash", flush_then_read)

    # when
    read = await api.gql("{ viewer { apiKey { totalRequests } } }", token=secret)

    # then: the three before, and this one, each counted once
    assert read.ok()["viewer"]["apiKey"]["totalRequests"] == 4


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
async def test_counters_read_while_a_flush_is_in_progress_count_each_request_once(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    # given: three unflushed requests, and a flush of them in progress
    owner, key_id, _ = await _key_with_three_requests(api)
    flush = await _flush_paused(app, monkeypatch, committed=committed)

    # when
    read = await api.gql(
        "query($id: ID!) { apiKey(id: $id) { totalRequests } }", {"id": key_id}, token=owner
    )

    # then
    await flush
    assert read.ok()["apiKey"]["totalRequests"] == 3


async def test_counters_read_while_a_flush_commits_count_each_request_once(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: three unflushed requests, and a flush that begins and commits while the stored
    # counters are being read
    owner, key_id, _ = await _key_with_three_requests(api)
    from keyplane.records import Lookups

    real_by_ids = Lookups.by_ids

    async def flush_while_reading(self: Lookups, table: str, columns: str, ids: list[str]) -> Any:
        rows = await real_by_ids(self, table, columns, ids)
        if table == "api_key":
            monkeypatch.setattr(Lookups, "by_ids", real_by_ids)
            await app.state.services.usage.flush()
        return rows

    monkeypatch.setattr(Lookups, "by_ids", flush_while_reading)

    # when
    read = await api.gql(
        "query($id: ID!) { apiKey(id: $id) { totalRequests } }", {"id": key_id}, token=owner
    )

    # then
    assert read.ok()["apiKey"]["totalRequests"] == 3


async def test_a_page_of_keys_shows_flushed_and_unflushed_requests_together(
    api: Api, app: Starlette
) -> None:
    # given: three requests flushed, then two not yet
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    _, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    for _ in range(3):
        (await api.gql("{ viewer { kind } }", token=secret)).ok()
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


@pytest.mark.parametrize("committed", [False, True], ids=["before commit", "after commit"])
async def test_a_page_of_keys_read_while_a_flush_is_in_progress_counts_each_request_once(
    api: Api, app: Starlette, monkeypatch: pytest.MonkeyPatch, committed: bool
) -> None:
    # given: three unflushed requests, and a flush of them in progress
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    _, secret = await api.create_key(owner, env, ["VIEW_ANALYTICS"])
    for _ in range(3):
        (await api.gql("{ viewer { kind } }", token=secret)).ok()
    flush = await _flush_paused(app, monkeypatch, committed=committed)

    # when
    page = await api.gql(
        "query($id: ID!) { environment(id: $id) { apiKeys { edges { node { totalRequests } } } } }",
        {"id": env},
        token=owner,
    )

    # then
    await flush
    assert page.ok() == {"environment": {"apiKeys": {"edges": [{"node": {"totalRequests": 3}}]}}}
