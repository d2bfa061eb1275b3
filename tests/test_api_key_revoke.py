"""revokeApiKey and deleteApiKey: refused from the key's very next request."""

from __future__ import annotations

from unittest.mock import ANY

from keyplane.auth.api_key import generate_secret
from tests import factories
from tests.api_key_helpers import (
    DELETE_KEY,
    GET_KEY,
    MISSING_KEY_ID,
    REVOKE_KEY,
    VIEWER,
    assert_refused_credentials,
    list_names,
    read_key,
)
from tests.helpers import Api, Clock, new_tenant
from tests.schema_client import SchemaApi

# --- revokeApiKey ----------------------------------------------------------------------------


async def test_a_revoked_key_is_refused_on_its_very_next_request(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)
    (await api.gql(VIEWER, token=secret)).ok()

    # when
    revoked = await api.gql(REVOKE_KEY, {"id": key_id}, token=owner.token)
    next_request = await api.gql(VIEWER, token=secret)

    # then
    assert revoked.ok() == {"revokeApiKey": {"id": key_id, "status": "REVOKED", "revokedAt": ANY}}
    assert_refused_credentials(next_request)
    assert next_request.body == (await api.gql(VIEWER, token=generate_secret())).body
    record = await read_key(api, owner.token, key_id)
    assert (record["status"], record["revokedAt"], record["totalRequests"]) == (
        "REVOKED",
        revoked.data["revokeApiKey"]["revokedAt"],
        1,
    )


async def test_revoking_twice_changes_nothing(schema: SchemaApi, clock: Clock) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, _ = await schema.create_key(owner.token, owner.environment_id)
    first = await schema.gql(REVOKE_KEY, {"id": key_id}, token=owner.token)
    clock.advance(30)

    # when
    second = await schema.gql(REVOKE_KEY, {"id": key_id}, token=owner.token)

    # then
    assert second.ok() == first.ok()


async def test_a_management_key_may_revoke_itself(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await api.gql(REVOKE_KEY, {"id": key_id}, token=secret)

    # then
    assert result.ok()["revokeApiKey"]["status"] == "REVOKED"
    assert_refused_credentials(await api.gql(VIEWER, token=secret))


# --- deleteApiKey ----------------------------------------------------------------------------


async def test_a_deleted_key_is_gone_and_refused(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    await api.create_key(owner.token, owner.environment_id, name="kept")
    key_id, secret = await api.create_key(
        owner.token, owner.environment_id, ["VIEW_ANALYTICS"], name="deleted"
    )

    # when
    result = await api.gql(DELETE_KEY, {"id": key_id}, token=owner.token)

    # then
    assert result.ok() == {
        "deleteApiKey": {"id": key_id, "name": "deleted", "scopes": ["VIEW_ANALYTICS"]}
    }
    assert_refused_credentials(await api.gql(VIEWER, token=secret))
    assert await list_names(api, owner.token, owner.environment_id) == ["kept"]
    gone = await api.gql(GET_KEY, {"id": key_id}, token=owner.token)
    missing = await api.gql(GET_KEY, {"id": MISSING_KEY_ID}, token=owner.token)
    assert gone.codes == ["NOT_FOUND"]
    assert gone.body == missing.body


async def test_deleting_a_deleted_key_is_not_found(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, _ = await schema.create_key(owner.token, owner.environment_id)
    (await schema.gql(DELETE_KEY, {"id": key_id}, token=owner.token)).ok()

    # when
    result = await schema.gql(DELETE_KEY, {"id": key_id}, token=owner.token)

    # then
    assert result.data == {"deleteApiKey": None}
    assert result.codes == ["NOT_FOUND"]
