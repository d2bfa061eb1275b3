"""What the usage tests share: documents, periods, helpers, and the mark (`HOURLY_FLUSH`) that
slows the background flusher down to once an hour in each usage test module, so that each test
decides when counts reach the database (`await usage.flush()`)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.helpers import Api, Clock, Result

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


# --- helpers -------------------------------------------------------------------------------


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


def api_over(client: httpx.AsyncClient) -> Api:
    return Api(client, oauth=None)  # type: ignore[arg-type]  # these callers use no OAuth tokens


def usage_of(result: Result) -> Any:
    """The `usage` of the one object a usage query asked for (partial data: it alone is null
    when refused)."""
    [found] = result.data.values()
    assert found is not None, result.body
    return found["usage"]


# Each usage test decides when counts reach the database (`await usage.flush()`).
HOURLY_FLUSH = pytest.mark.usage_flush_seconds(3600)
