"""Usage metering: who may read usage."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.helpers import Api, Clock, new_tenant
from tests.usage_helpers import (
    ENVIRONMENT_USAGE,
    HOUR,
    HOURLY_FLUSH,
    KEY_USAGE,
    LAST_SECOND,
    MINUTE,
    create_key,
    environment_usage,
    key_usage,
    move_to_next_period,
    point,
    range_of,
    send,
)

pytestmark = HOURLY_FLUSH

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

    # then: the other key is refused as a whole; the environment only its series
    assert (result.status, result.codes) == (200, ["FORBIDDEN"])
    refused = {"apiKey": None} if document == KEY_USAGE else {"environment": {"usage": None}}
    assert result.data == refused


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
    assert (result.status, result.data["apiKey"]["usage"], result.codes) == (
        200,
        None,
        ["FORBIDDEN"],
    )


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
