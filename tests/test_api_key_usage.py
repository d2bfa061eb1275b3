"""The usage counters a key drives: totalRequests and lastUsedAt."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from tests.api_key_helpers import (
    GET_KEY,
    MISSING_KEY_ID,
    VIEWER,
    instant,
    mistyped,
    read_key,
)
from tests.helpers import Api, Clock, new_tenant

# --- usage -----------------------------------------------------------------------------------


async def test_every_authenticated_request_counts_whatever_its_result(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])

    # when
    ok = await api.gql(VIEWER, token=secret)
    not_found = await api.gql(GET_KEY, {"id": MISSING_KEY_ID}, token=secret)
    unparsable = await api.gql("{ viewer {", token=secret)
    clock.advance(90)
    before_last = clock()
    await api.gql(VIEWER, token=secret)

    # then
    assert (ok.errors, not_found.codes, unparsable.codes) == ([], ["NOT_FOUND"], ["BAD_USER_INPUT"])
    record = await read_key(api, owner.token, key_id)
    assert record["totalRequests"] == 4
    assert before_last <= instant(record["lastUsedAt"]) <= clock()


async def test_last_used_at_moves_with_each_request(api: Api, clock: Clock) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)
    await api.gql(VIEWER, token=secret)
    first = await read_key(api, owner.token, key_id)

    # when
    clock.advance(60)
    await api.gql(VIEWER, token=secret)

    # then
    second = await read_key(api, owner.token, key_id)
    assert (first["totalRequests"], second["totalRequests"]) == (1, 2)
    assert instant(second["lastUsedAt"]) - instant(first["lastUsedAt"]) >= timedelta(seconds=60)


async def test_refused_and_other_callers_requests_do_not_count(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)

    # when
    await api.gql(VIEWER, token=mistyped(secret))
    await api.gql(GET_KEY, {"id": key_id}, token=owner.token)

    # then
    record = await read_key(api, owner.token, key_id)
    assert (record["totalRequests"], record["lastUsedAt"]) == (0, None)


async def test_200_concurrent_requests_with_one_key_count_exactly_200(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)

    # when
    results = await asyncio.gather(*(api.gql(VIEWER, token=secret) for _ in range(200)))

    # then
    assert [result.status for result in results] == [200] * 200
    assert (await read_key(api, owner.token, key_id))["totalRequests"] == 200
