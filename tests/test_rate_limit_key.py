"""Rate limits over HTTP: a key's own limit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers import Api, new_tenant
from tests.rate_limit_helpers import (
    CREATE_KEY,
    GET_KEY,
    KEY_USAGE,
    UPDATE_KEY,
    VIEWER_KIND,
    create_key_input,
    new_key,
    quota,
    rate_limits,  # noqa: F401  (a fixture: the real default tiers)
    spend,
    statuses,
)

# --- per-key limits ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 10_001])
async def test_a_key_limit_outside_1_to_10000_is_bad_input(api: Api, value: int) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, _ = await new_key(api, tenant)

    # when
    created = await api.gql(
        CREATE_KEY,
        {"input": create_key_input(tenant, "bad") | {"rateLimitPerMinute": value}},
        token=tenant.token,
    )
    updated = await api.gql(
        UPDATE_KEY, {"input": {"id": key_id, "rateLimitPerMinute": value}}, token=tenant.token
    )

    # then
    assert (created.data, updated.data) == ({"createApiKey": None}, {"updateApiKey": None})
    for result in (created, updated):
        assert result.status == 200
        assert [e["extensions"] for e in result.errors] == [
            {"code": "BAD_USER_INPUT", "field": "rateLimitPerMinute"}
        ]
    assert (await api.gql(GET_KEY, {"id": key_id}, token=tenant.token)).ok() == {
        "apiKey": {"id": key_id, "rateLimitPerMinute": 100}
    }


async def test_a_key_shows_its_own_limit_or_the_tiers(api: Api) -> None:
    # given
    tenant = await new_tenant(api)

    # when
    default = await api.gql(
        CREATE_KEY, {"input": create_key_input(tenant, "d")}, token=tenant.token
    )
    lowest = await api.gql(
        CREATE_KEY,
        {"input": create_key_input(tenant, "l") | {"rateLimitPerMinute": 1}},
        token=tenant.token,
    )
    highest = await api.gql(
        CREATE_KEY,
        {"input": create_key_input(tenant, "h") | {"rateLimitPerMinute": 10_000}},
        token=tenant.token,
    )

    # then
    assert [
        result.ok()["createApiKey"]["apiKey"]["rateLimitPerMinute"]
        for result in (default, lowest, highest)
    ] == [100, 1, 10_000]


async def test_a_key_limited_to_5_a_minute_is_refused_on_its_6th_request(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api), rate_limit=5)
    admitted = await spend(api, 5, token=secret)

    # when
    refused = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert statuses(admitted) == {200}
    assert sorted(quota(r.headers).remaining for r in admitted) == [0, 1, 2, 3, 4]
    assert refused.status == 429
    assert refused.errors[0]["extensions"]["limit"] == 5
    assert refused.headers["RateLimit-Policy"] == '"api_key";q=5;w=60'


async def test_updating_a_keys_limit_applies_from_its_next_request(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, secret = await new_key(api, tenant)

    # when
    updated = await api.gql(
        UPDATE_KEY, {"input": {"id": key_id, "rateLimitPerMinute": 2}}, token=tenant.token
    )
    requests = [await api.gql(VIEWER_KIND, token=secret) for _ in range(3)]

    # then
    assert updated.ok() == {"updateApiKey": {"id": key_id, "rateLimitPerMinute": 2}}
    assert [r.status for r in requests] == [200, 200, 429]
    assert quota(requests[0].headers).limit == 2


async def test_clearing_a_keys_limit_returns_it_to_the_tier(api: Api) -> None:
    # given: a 5/minute key that has spent its bucket
    tenant = await new_tenant(api)
    key_id, secret = await new_key(api, tenant, rate_limit=5)
    await spend(api, 5, token=secret)
    assert (await api.gql(VIEWER_KIND, token=secret)).status == 429

    # when
    cleared = await api.gql(
        UPDATE_KEY, {"input": {"id": key_id, "clearRateLimit": True}}, token=tenant.token
    )
    result = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert cleared.ok() == {"updateApiKey": {"id": key_id, "rateLimitPerMinute": 100}}
    assert result.ok() == {"viewer": {"kind": "API_KEY"}}
    assert quota(result.headers).limit == 100


async def test_a_rate_limited_key_request_counts_as_rate_limited_not_in_total_requests(
    api: Api,
) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, secret = await new_key(api, tenant, rate_limit=5)
    results = await spend(api, 7, token=secret)
    now = datetime.now(UTC)

    # when
    usage = await api.gql(
        KEY_USAGE,
        {
            "id": key_id,
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
        token=tenant.token,
    )

    # then
    assert sorted(r.status for r in results) == [200] * 5 + [429] * 2
    key = usage.ok()["apiKey"]
    assert key["totalRequests"] == 5
    assert {
        name: sum(point[name] for point in key["usage"])
        for name in ("requests", "refused", "rateLimited")
    } == {"requests": 5, "refused": 2, "rateLimited": 2}
