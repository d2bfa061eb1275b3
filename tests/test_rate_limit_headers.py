"""Rate limits over HTTP: the headers of every answer, and the 429 answer."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from unittest.mock import ANY

import pytest

from keyplane.auth.api_key import generate_secret
from tests.helpers import Api, Result, Tenant, new_tenant
from tests.rate_limit_helpers import (
    GET_KEY,
    RATE_HEADERS,
    RATE_LIMIT_RE,
    VIEWER_KIND,
    VIEWER_RATE_LIMIT,
    new_key,
    quota,
    rate_limits,  # noqa: F401  (a fixture: the real default tiers)
    spend,
)

# --- headers and the 429 answer ------------------------------------------------------------


async def test_a_response_carries_the_rate_limit_headers_counting_this_request(
    api: Api,
) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    await api.gql(VIEWER_KIND, token=secret)
    before = time.time()

    # when
    result = await api.gql(VIEWER_KIND, token=secret)

    # then
    after = time.time()
    headers = result.headers
    assert headers["X-RateLimit-Limit"] == "100"
    assert headers["X-RateLimit-Remaining"] == "98"
    # The first request's unit frees up a minute after it was spent.
    assert math.ceil(before - 1 + 60) <= int(headers["X-RateLimit-Reset"]) <= math.ceil(after + 60)
    assert headers["RateLimit-Policy"] == '"api_key";q=100;w=60'
    match = RATE_LIMIT_RE.match(headers["RateLimit"])
    assert match is not None, headers["RateLimit"]
    assert (match["tier"], match["remaining"]) == ("api_key", "98")
    assert 58 <= int(match["reset_in"]) <= 60


async def a_success(api: Api, tenant: Tenant) -> Result:
    return await api.gql(VIEWER_KIND, token=tenant.token)


async def a_graphql_error(api: Api, tenant: Tenant) -> Result:
    return await api.gql(GET_KEY, {"id": "key_" + "0" * 20}, token=tenant.token)


async def an_anonymous_request(api: Api, tenant: Tenant) -> Result:
    return await api.gql(VIEWER_KIND)


async def refused_credentials(api: Api, tenant: Tenant) -> Result:
    return await api.gql(VIEWER_KIND, token=generate_secret())


async def a_rate_limited_request(api: Api, tenant: Tenant) -> Result:
    _, secret = await new_key(api, tenant, rate_limit=1)
    await api.gql(VIEWER_KIND, token=secret)
    return await api.gql(VIEWER_KIND, token=secret)


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        pytest.param(a_success, 200, None, id="success"),
        pytest.param(a_graphql_error, 200, "NOT_FOUND", id="graphql-error"),
        pytest.param(an_anonymous_request, 200, None, id="anonymous"),
        pytest.param(refused_credentials, 401, "UNAUTHENTICATED", id="refused-credentials"),
        pytest.param(a_rate_limited_request, 429, "RATE_LIMITED", id="rate-limited"),
    ],
)
async def test_every_graphql_response_carries_all_rate_limit_headers(
    api: Api,
    send: Callable[[Api, Tenant], Awaitable[Result]],
    status: int,
    code: str | None,
) -> None:
    # given
    tenant = await new_tenant(api)

    # when
    result = await send(api, tenant)

    # then
    assert (result.status, result.codes) == (status, [] if code is None else [code])
    assert [name for name in RATE_HEADERS if name in result.headers] == list(RATE_HEADERS)


async def test_a_refused_request_gets_429_with_retry_after_and_a_rate_limited_error(
    api: Api,
) -> None:
    # given
    await spend(api, 30)

    # when
    result = await api.gql(VIEWER_KIND)

    # then
    assert result.status == 429
    assert result.headers["content-type"] == "application/json"
    assert result.body == {
        "data": None,
        "errors": [
            {
                "message": ANY,
                "extensions": {
                    "code": "RATE_LIMITED",
                    "limit": 30,
                    "resetAt": ANY,
                    "retryAfter": int(result.headers["Retry-After"]),
                },
            }
        ],
    }
    assert re.fullmatch(r"[1-9][0-9]*", result.headers["Retry-After"])
    assert 1 <= int(result.headers["Retry-After"]) <= 60
    reset_at = datetime.fromisoformat(result.errors[0]["extensions"]["resetAt"])
    assert reset_at.tzinfo is not None
    reset_header = int(result.headers["X-RateLimit-Reset"])
    assert reset_header - 1 <= reset_at.timestamp() <= reset_header
    assert quota(result.headers).remaining == 0


async def test_viewer_rate_limit_matches_the_headers_and_asking_costs_nothing_extra(
    api: Api,
) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    plain = await api.gql(VIEWER_KIND, token=secret)

    # when
    asked = await api.gql(VIEWER_RATE_LIMIT, token=secret)
    after = await api.gql(VIEWER_KIND, token=secret)

    # then
    rate_limit = asked.ok()["viewer"]["rateLimit"]
    assert rate_limit == {
        "limit": 100,
        "remaining": 98,
        "resetAt": ANY,
        "windowSeconds": 60,
        "tier": "api_key",
    }
    assert (quota(plain.headers).remaining, quota(after.headers).remaining) == (99, 97)
    assert rate_limit["limit"] == quota(asked.headers).limit
    assert rate_limit["remaining"] == quota(asked.headers).remaining
    reset_at = datetime.fromisoformat(rate_limit["resetAt"]).timestamp()
    assert math.ceil(reset_at) == quota(asked.headers).reset
