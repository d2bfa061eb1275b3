"""Reading keys: environment.apiKeys (order, pages, status filter) and apiKey(id)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from starlette.applications import Starlette

from keyplane.models import ApiKey
from keyplane.permissions.scopes import Scope
from tests import factories
from tests.api_key_helpers import (
    GET_KEY,
    LIST_KEYS,
    MISSING_KEY_ID,
    VIEWER,
    assert_bad_input,
    create,
    names_listed,
)
from tests.helpers import Api, Clock, new_tenant
from tests.schema_client import execute

# --- environment.apiKeys ---------------------------------------------------------------------


async def test_keys_are_listed_newest_first(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    for name in ["first", "second", "third"]:
        await factories.owners_key(owner, name=name)

    # when
    result = await execute(app, LIST_KEYS, {"id": owner.environment_id}, credential=owner.token)

    # then
    connection = result.ok()["environment"]["apiKeys"]
    assert [edge["node"]["name"] for edge in connection["edges"]] == ["third", "second", "first"]
    assert connection["pageInfo"] == {
        "hasNextPage": False,
        "endCursor": connection["edges"][-1]["cursor"],
    }


async def test_pages_after_a_cursor_stay_stable_while_keys_are_created(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)

    async def new_key(name: str) -> None:
        await factories.owners_key(owner, name=name)

    for number in range(1, 6):
        await new_key(f"k{number}")

    async def page(after: str | None) -> dict[str, Any]:
        variables = {"id": owner.environment_id, "first": 2, "after": after}
        result = await execute(app, LIST_KEYS, variables, credential=owner.token)
        connection: dict[str, Any] = result.ok()["environment"]["apiKeys"]
        return {
            "names": [edge["node"]["name"] for edge in connection["edges"]],
            "hasNextPage": connection["pageInfo"]["hasNextPage"],
            "endCursor": connection["pageInfo"]["endCursor"],
        }

    # when
    first = await page(None)
    await new_key("k6")
    second = await page(first["endCursor"])
    await new_key("k7")
    third = await page(second["endCursor"])

    # then
    assert [first["names"], second["names"], third["names"]] == [["k5", "k4"], ["k3", "k2"], ["k1"]]
    assert [first["hasNextPage"], second["hasNextPage"], third["hasNextPage"]] == [
        True,
        True,
        False,
    ]
    assert await names_listed(app, owner.token, owner.environment_id, first=2) == ["k7", "k6"]


async def test_keys_created_in_the_same_instant_are_each_listed_once_across_pages(
    app: Starlette,
) -> None:
    # given: five keys with one created_at (the cursor then orders them by id)
    owner = await factories.tenant(app)
    instant = datetime(2026, 1, 1, tzinfo=UTC)
    for number in range(5):
        issued = await factories.api_key(
            environment_id=owner.environment_id, created_by_id=owner.user_id, name=f"t{number}"
        )
        await ApiKey.filter(id=issued.row.id).update(created_at=instant)

    # when: pages of two
    names: list[str] = []
    after = None
    for _ in range(4):
        variables = {"id": owner.environment_id, "first": 2, "after": after}
        result = await execute(app, LIST_KEYS, variables, credential=owner.token)
        connection = result.ok()["environment"]["apiKeys"]
        names += [edge["node"]["name"] for edge in connection["edges"]]
        after = connection["pageInfo"]["endCursor"]
        if not connection["pageInfo"]["hasNextPage"]:
            break

    # then
    assert sorted(names) == [f"t{number}" for number in range(5)]


@pytest.mark.parametrize("first", [1, 100])
async def test_a_page_may_hold_1_to_100_keys(app: Starlette, first: int) -> None:
    # given
    owner = await factories.tenant(app)
    for name in ["a", "b"]:
        await factories.owners_key(owner, name=name)

    # when
    names = await names_listed(app, owner.token, owner.environment_id, first=first)

    # then
    assert names == ["b", "a"][:first]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"first": 0}, "first"),
        ({"first": 101}, "first"),
        ({"first": -1}, "first"),
        ({"after": "not a cursor"}, "after"),
    ],
    ids=["first 0", "first 101", "first -1", "foreign cursor"],
)
async def test_listing_keys_with_bad_paging_is_refused_naming_the_argument(
    api: Api, arguments: dict[str, Any], field: str
) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await api.gql(LIST_KEYS, {"id": owner.environment_id, **arguments}, token=owner.token)

    # then: the page alone is null
    assert result.data == {"environment": {"apiKeys": None}}
    assert_bad_input(result, field)


async def test_keys_are_filtered_by_status(app: Starlette, clock: Clock) -> None:
    # given
    owner = await factories.tenant(app)
    now = datetime.now(UTC)

    async def new_key(name: str, **fields: Any) -> str:
        issued = await factories.owners_key(owner, name=name, **fields)
        return issued.id

    await new_key("expired", expires_at=now + timedelta(seconds=60))
    revoked_id = await new_key("revoked", revoked_at=now)
    await new_key("active")
    await new_key("expiring later", expires_at=now + timedelta(days=1))
    clock.advance(61)

    # when
    by_status = {
        status: await names_listed(app, owner.token, owner.environment_id, status=status)
        for status in ["ACTIVE", "REVOKED", "EXPIRED"]
    }
    everything = await execute(app, LIST_KEYS, {"id": owner.environment_id}, credential=owner.token)

    # then
    assert by_status == {
        "ACTIVE": ["expiring later", "active"],
        "REVOKED": ["revoked"],
        "EXPIRED": ["expired"],
    }
    assert [edge["node"] for edge in everything.ok()["environment"]["apiKeys"]["edges"]] == [
        {"id": ANY, "name": "expiring later", "status": "ACTIVE"},
        {"id": ANY, "name": "active", "status": "ACTIVE"},
        {"id": revoked_id, "name": "revoked", "status": "REVOKED"},
        {"id": ANY, "name": "expired", "status": "EXPIRED"},
    ]


async def test_a_key_with_view_analytics_lists_the_keys_of_its_environment(
    app: Starlette,
) -> None:
    # given
    owner = await factories.tenant(app)
    await factories.owners_key(owner, name="worker")
    reader = await factories.owners_key(owner, Scope.VIEW_ANALYTICS, name="dashboard")

    # when
    names = await names_listed(app, reader.secret, owner.environment_id)

    # then
    assert names == ["dashboard", "worker"]


# --- apiKey(id) ------------------------------------------------------------------------------


async def test_a_key_is_read_by_id(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    created = (await create(api, owner.token, owner.environment_id, name="reader")).ok()

    # when
    result = await api.gql(
        GET_KEY, {"id": created["createApiKey"]["apiKey"]["id"]}, token=owner.token
    )

    # then
    assert result.ok() == {"apiKey": created["createApiKey"]["apiKey"]}


async def test_a_missing_key_id_is_not_found(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)

    # when
    result = await execute(app, GET_KEY, {"id": MISSING_KEY_ID}, credential=owner.token)

    # then
    assert result.data == {"apiKey": None}
    assert result.codes == ["NOT_FOUND"]


async def test_a_key_without_read_scopes_still_reads_itself_through_viewer(
    app: Starlette,
) -> None:
    # given
    owner = await factories.tenant(app)
    key = await factories.owners_key(owner, Scope.GENERATE_DOCUMENTS)

    # when
    result = await execute(app, VIEWER, credential=key.secret)

    # then
    assert result.ok()["viewer"]["apiKey"] == {"id": key.id, "name": "server"}
