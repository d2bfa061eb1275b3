"""Rate limits over HTTP: what operations, aliases and batches cost."""

from __future__ import annotations

from typing import Any

import pytest

from tests.helpers import Api, Tenant, cost, new_tenant
from tests.rate_limit_helpers import (
    CREATE_KEY,
    MANY_ROOT_FIELDS,
    REVOKE_THREE_KEYS,
    REVOKE_THREE_KEYS_BY_FRAGMENT,
    VIEWER_KIND,
    VIEWER_RATE_LIMIT,
    aliased_create_keys,
    create_key_input,
    key_ids,
    new_key,
    post_batch,
    quota,
    rate_limits,  # noqa: F401  (a fixture: the real default tiers)
    spend,
)

# --- what operations cost ------------------------------------------------------------------


async def test_a_query_costs_one_whatever_its_root_fields(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))

    # when
    result = await api.gql(MANY_ROOT_FIELDS, token=secret)

    # then
    assert result.status == 200
    assert quota(result.headers).remaining == 99


@pytest.mark.parametrize(
    "document", [REVOKE_THREE_KEYS, REVOKE_THREE_KEYS_BY_FRAGMENT], ids=["aliases", "fragment"]
)
async def test_a_mutation_costs_one_per_root_field_aliases_included(
    api: Api, document: str
) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    victims = [(await new_key(api, tenant))[0] for _ in range(3)]

    # when
    result = await api.gql(document, dict(zip("abc", victims, strict=True)), token=secret)

    # then
    data = result.ok()
    assert [data[name]["status"] for name in ("first", "second", "third")] == ["REVOKED"] * 3
    assert quota(result.headers).remaining == 100 - 3


async def test_a_batch_costs_the_sum_of_its_operations(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    operations: list[tuple[str, dict[str, Any]]] = [(VIEWER_KIND, {}), (MANY_ROOT_FIELDS, {})] * 2
    operations.append((VIEWER_RATE_LIMIT, {}))

    # when
    response = await post_batch(api, operations, token=secret)
    after = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert response.status_code == 200
    body = response.json()
    assert [item.get("errors") for item in body] == [None] * 5
    assert quota(response.headers).remaining == 100 - 5
    assert body[4]["data"]["viewer"]["rateLimit"]["remaining"] == 100 - 5
    assert quota(after.headers).remaining == 100 - 6


async def test_a_batch_of_mutations_costs_one_per_root_field_of_each(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    victims = [(await new_key(api, tenant))[0] for _ in range(3)]
    operations: list[tuple[str, dict[str, Any]]] = [
        (REVOKE_THREE_KEYS, dict(zip("abc", victims, strict=True))),
        (CREATE_KEY, {"input": create_key_input(tenant, "batched")}),
        (VIEWER_KIND, {}),
    ]

    # when
    response = await post_batch(api, operations, token=secret)

    # then
    assert response.status_code == 200
    assert [item.get("errors") for item in response.json()] == [None] * 3
    assert quota(response.headers).remaining == 100 - 5


async def test_a_batch_of_25_operations_runs_and_26_is_refused_with_a_json_error(
    api: Api,
) -> None:
    # when
    allowed = await post_batch(api, [(VIEWER_KIND, {})] * 25)
    too_many = await post_batch(api, [(VIEWER_KIND, {})] * 26)

    # then
    assert allowed.status_code == 200
    assert (
        allowed.json()
        == [{"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}}] * 25
    )
    assert too_many.status_code == 400
    assert too_many.headers["content-type"] == "application/json"
    assert too_many.json() == {
        "data": None,
        "errors": [
            {
                "message": "Too many operations",
                "extensions": {"code": "BAD_USER_INPUT", "field": "body"},
            }
        ],
    }


async def _three_requests_left(api: Api) -> tuple[Tenant, str]:
    """A tenant and the secret of a key of theirs that has three requests of its minute left."""
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    await spend(api, 97, token=secret)
    return tenant, secret


async def test_a_batch_larger_than_what_is_left_is_refused_and_none_of_it_runs(
    api: Api,
) -> None:
    # given: three requests left
    tenant, secret = await _three_requests_left(api)
    keys_before = await key_ids(api, tenant)
    operations = [(CREATE_KEY, {"input": create_key_input(tenant, f"b{i}")}) for i in range(4)]

    # when
    response = await post_batch(api, operations, token=secret)
    after = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert response.status_code == 429
    assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert int(response.headers["Retry-After"]) >= 1
    assert await key_ids(api, tenant) == keys_before
    assert quota(after.headers).remaining == 2


async def test_a_document_of_more_mutations_than_what_is_left_is_refused_and_none_runs(
    api: Api,
) -> None:
    # given: three requests left
    tenant, secret = await _three_requests_left(api)
    keys_before = await key_ids(api, tenant)

    # when
    result = await api.gql(aliased_create_keys(4), {"e": tenant.environment_id}, token=secret)

    # then
    assert result.status == 429
    assert result.codes == ["RATE_LIMITED"]
    assert await key_ids(api, tenant) == keys_before


async def test_thirty_aliased_create_api_key_in_one_document_cost_thirty(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    keys_before = await key_ids(api, tenant)

    # when
    result = await api.gql(aliased_create_keys(30), {"e": tenant.environment_id}, token=secret)

    # then
    assert len(result.ok()) == 30
    assert quota(result.headers).remaining == 100 - 30
    assert len(await key_ids(api, tenant)) == len(keys_before) + 30


async def test_fifty_aliased_create_api_key_are_charged_fifty_and_none_runs(api: Api) -> None:
    # given: over the 30-alias limit
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    keys_before = await key_ids(api, tenant)

    # when
    result = await api.gql(aliased_create_keys(50), {"e": tenant.environment_id}, token=secret)

    # then
    assert result.data is None
    assert result.codes == ["QUERY_TOO_COMPLEX"]
    assert quota(result.headers).remaining == 100 - 50
    assert await key_ids(api, tenant) == keys_before
