"""updateApiKey: name and scopes, effective from the key's next request, within the caller's own."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette

from keyplane.permissions.scopes import Scope
from tests import factories
from tests.api_key_helpers import (
    BAD_NAME_OR_SCOPES,
    UPDATE_KEY,
    VIEWER,
    assert_bad_input,
    key_read,
    snapshot,
)
from tests.helpers import Api, new_tenant
from tests.schema_client import execute

# --- updateApiKey ----------------------------------------------------------------------------


async def test_renaming_a_key_keeps_its_scopes(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    key = await factories.owners_key(owner, Scope.VIEW_ANALYTICS)

    # when
    result = await execute(
        app, UPDATE_KEY, {"input": {"id": key.id, "name": "Renamed"}}, credential=owner.token
    )

    # then
    assert result.ok() == {
        "updateApiKey": {
            "id": key.id,
            "name": "Renamed",
            "scopes": ["VIEW_ANALYTICS"],
            "status": "ACTIVE",
        }
    }
    assert (await key_read(app, owner.token, key.id))["name"] == "Renamed"


async def test_changing_a_keys_scopes_applies_to_its_next_request(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    key = await factories.owners_key(owner, Scope.VIEW_ANALYTICS)

    # when
    result = await execute(
        app,
        UPDATE_KEY,
        {"input": {"id": key.id, "scopes": ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES"]}},
        credential=owner.token,
    )

    # then
    assert result.ok()["updateApiKey"] == {
        "id": key.id,
        "name": "server",
        "scopes": ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES"],
        "status": "ACTIVE",
    }
    viewer = (await execute(app, VIEWER, credential=key.secret)).ok()["viewer"]
    assert viewer["scopes"] == ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES"]


async def test_a_management_key_changes_scopes_only_within_its_own(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    key = await factories.owners_key(owner, Scope.MANAGE_PROJECT)
    manager = await factories.owners_key(owner, Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS)

    # when
    within = await execute(
        app,
        UPDATE_KEY,
        {"input": {"id": key.id, "scopes": ["VIEW_ANALYTICS"]}},
        credential=manager.secret,
    )
    beyond = await execute(
        app,
        UPDATE_KEY,
        {"input": {"id": key.id, "scopes": ["MANAGE_TEMPLATES"]}},
        credential=manager.secret,
    )

    # then
    assert within.ok()["updateApiKey"]["scopes"] == ["VIEW_ANALYTICS"]
    assert beyond.data == {"updateApiKey": None}
    assert beyond.codes == ["FORBIDDEN"]
    assert (await key_read(app, owner.token, key.id))["scopes"] == ["VIEW_ANALYTICS"]


@pytest.mark.parametrize(("change", "field"), BAD_NAME_OR_SCOPES)
async def test_updating_a_key_with_bad_input_is_refused_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(UPDATE_KEY, {"input": {"id": key_id, **change}}, token=owner.token)

    # then
    assert result.data == {"updateApiKey": None}
    assert_bad_input(result, field)
    assert await snapshot(api, owner.token, owner.environment_id) == before
