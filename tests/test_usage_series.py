"""Usage metering: `apiKey.usage` and `environment.usage` return one point per period, empty
periods included; an environment's series sums its keys, deleted ones too; and their ranges.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keyplane.usage.buffer import UsageBuffer
from tests.helpers import Api, Clock, new_tenant
from tests.usage_helpers import (
    DELETE_KEY,
    ENVIRONMENT_USAGE,
    HOURLY_FLUSH,
    KEY_USAGE,
    LIST_KEYS,
    MINUTE,
    STEPS,
    assert_bad_input,
    create_key,
    environment_usage,
    key_usage,
    move_to_next_period,
    point,
    range_of,
    send,
    series,
    usage_of,
)

pytestmark = HOURLY_FLUSH

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
    assert usage_of(result) is None


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
    assert too_large.data == {"environment": {"usage": None}}
