"""Usage metering: what a key's per-minute bucket counts.

A key's bucket counts the requests it made that were admitted, and its refusals by reason: 401
(the key was presented revoked or expired), 403 (an admitted request answered FORBIDDEN) and
429 (over the rate limit).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyplane.usage.buffer import UsageBuffer
from tests.helpers import Api, Clock, new_tenant
from tests.usage_helpers import (
    HOURLY_FLUSH,
    KEY_USAGE,
    LAST_SECOND,
    LIST_KEYS,
    MINUTE,
    REVOKE_KEY,
    TIGHT_KEY_TIER,
    TOTAL_REQUESTS,
    VIEWER,
    create_key,
    environment_usage,
    key_usage,
    move_to_next_period,
    point,
    range_of,
    send,
    series,
)

pytestmark = HOURLY_FLUSH

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
