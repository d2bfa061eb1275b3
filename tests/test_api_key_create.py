"""createApiKey, and the secret's life after it: its format, shown once, never stored, refused
when mistyped or expired.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest

from keyplane.auth.api_key import generate_secret
from tests import factories
from tests.api_key_helpers import (
    BAD_NAME_OR_SCOPES,
    DELETE_KEY,
    GET_KEY,
    LIST_KEYS,
    REVOKE_KEY,
    ROTATE_KEY,
    SECRET_RE,
    UPDATE_KEY,
    VIEWER,
    assert_bad_input,
    assert_refused_credentials,
    create,
    every_stored_row,
    mistyped,
    read_key,
    snapshot,
)
from tests.helpers import Api, Clock, in_future, new_tenant
from tests.schema_client import SchemaApi

# --- createApiKey ----------------------------------------------------------------------------


async def test_creating_a_key_returns_its_record_and_its_secret(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    expires_at = in_future(days=30)

    # when
    result = await create(
        api,
        owner.token,
        owner.environment_id,
        name="Billing worker",
        scopes=["VIEW_ANALYTICS", "GENERATE_DOCUMENTS"],
        expires_at=expires_at,
    )

    # then
    payload = result.ok()["createApiKey"]
    secret = payload["secret"]
    assert payload["apiKey"] == {
        "id": ANY,
        "name": "Billing worker",
        "prefix": secret[:11],
        "scopes": ["GENERATE_DOCUMENTS", "VIEW_ANALYTICS"],
        "status": "ACTIVE",
        "createdAt": ANY,
        "expiresAt": expires_at,
        "revokedAt": None,
        "lastUsedAt": None,
        "totalRequests": 0,
        "createdBy": {"id": owner.user_id},
        "environment": {"id": owner.environment_id},
    }
    assert payload["apiKey"] == await read_key(api, owner.token, payload["apiKey"]["id"])


async def test_a_key_without_expiry_is_accepted_and_works_at_once(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create(schema, owner.token, owner.environment_id, scopes=["MANAGE_TEMPLATES"])
    created = result.ok()["createApiKey"]
    viewer = (await schema.gql(VIEWER, token=created["secret"])).ok()["viewer"]

    # then
    assert created["apiKey"]["expiresAt"] is None
    assert viewer == {
        "kind": "API_KEY",
        "scopes": ["MANAGE_TEMPLATES"],
        "apiKey": {"id": created["apiKey"]["id"], "name": "server"},
        "environment": {"id": owner.environment_id},
    }


async def test_a_secret_is_fm_and_32_base62_characters_and_its_prefix_is_its_start(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    first = (await create(schema, owner.token, owner.environment_id)).ok()["createApiKey"]
    second = (await create(schema, owner.token, owner.environment_id)).ok()["createApiKey"]

    # then
    for payload in (first, second):
        assert SECRET_RE.match(payload["secret"])
        assert payload["apiKey"]["prefix"] == payload["secret"][: len("fm_") + 8]
    assert first["secret"] != second["secret"]
    assert first["apiKey"]["id"] != second["apiKey"]["id"]
    assert not first["apiKey"]["id"].startswith("fm_")


async def test_a_name_of_64_characters_and_a_far_expiry_are_accepted(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create(
        schema, owner.token, owner.environment_id, name="n" * 64, expires_at=in_future(days=3650)
    )

    # then
    assert result.ok()["createApiKey"]["apiKey"]["name"] == "n" * 64


@pytest.mark.parametrize(
    ("change", "field"),
    [
        *BAD_NAME_OR_SCOPES,
        pytest.param(
            {"expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()},
            "expiresAt",
            id="past expiry",
        ),
    ],
)
async def test_creating_a_key_with_bad_input_is_refused_naming_the_field(
    schema: SchemaApi, change: dict[str, Any], field: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create(schema, owner.token, owner.environment_id, **change)

    # then
    assert result.data == {"createApiKey": None}
    assert_bad_input(result, field)
    assert await snapshot(schema, owner.token, owner.environment_id) == []


async def test_a_management_key_creates_keys_in_its_own_environment_for_its_creator(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    _, manager = await schema.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await create(schema, manager, owner.environment_id, scopes=["MANAGE_PROJECT"])

    # then
    key = result.ok()["createApiKey"]["apiKey"]
    assert (key["scopes"], key["createdBy"], key["environment"]) == (
        ["MANAGE_PROJECT"],
        {"id": owner.user_id},
        {"id": owner.environment_id},
    )


async def test_a_management_key_cannot_grant_scopes_it_lacks(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    _, manager = await schema.create_key(
        owner.token, owner.environment_id, ["MANAGE_PROJECT", "VIEW_ANALYTICS"]
    )
    before = await snapshot(schema, owner.token, owner.environment_id)

    # when
    result = await create(
        schema, manager, owner.environment_id, scopes=["VIEW_ANALYTICS", "GENERATE_DOCUMENTS"]
    )

    # then
    assert result.data == {"createApiKey": None}
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(schema, owner.token, owner.environment_id) == before


async def test_an_oauth_token_grants_only_scopes_in_its_scope_claim(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    token = schema.oauth.token(email=owner.email, scope="project:manage analytics:view")

    # when
    allowed = await create(schema, token, owner.environment_id, scopes=["VIEW_ANALYTICS"])
    escalating = await create(schema, token, owner.environment_id, scopes=["GENERATE_DOCUMENTS"])

    # then
    assert allowed.ok()["createApiKey"]["apiKey"]["createdBy"] == {"id": owner.user_id}
    assert escalating.data == {"createApiKey": None}
    assert escalating.codes == ["FORBIDDEN"]


# --- the secret after creation ---------------------------------------------------------------


async def test_the_secret_never_appears_in_a_later_response(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    payload = (await create(api, owner.token, owner.environment_id)).ok()["createApiKey"]
    key_id, secret = payload["apiKey"]["id"], payload["secret"]

    # when
    responses = [
        await api.gql(GET_KEY, {"id": key_id}, token=owner.token),
        await api.gql(LIST_KEYS, {"id": owner.environment_id}, token=owner.token),
        await api.gql(VIEWER, token=secret),
        await api.gql(GET_KEY, {"id": key_id}, token=secret),
        await api.gql(UPDATE_KEY, {"input": {"id": key_id, "name": "renamed"}}, token=secret),
        await api.gql(
            ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 60}}, token=owner.token
        ),
        await api.gql(REVOKE_KEY, {"id": key_id}, token=owner.token),
        await api.gql(DELETE_KEY, {"id": key_id}, token=owner.token),
    ]

    # then
    for response in responses:
        assert response.status == 200
        assert not response.errors
        text = json.dumps(response.body)
        assert secret not in text
        assert secret[len(payload["apiKey"]["prefix"]) :] not in text


async def test_the_secret_is_not_stored_in_the_database(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, secret = await schema.create_key(owner.token, owner.environment_id)
    await schema.gql(VIEWER, token=secret)

    # when
    stored = await every_stored_row()

    # then
    assert key_id in stored  # the scan does see the key's row
    assert secret not in stored
    assert secret[len("fm_") + 8 :] not in stored


async def test_a_mistyped_secret_is_refused_like_an_unknown_one(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, secret = await api.create_key(owner.token, owner.environment_id)

    # when
    typo = await api.gql(VIEWER, token=mistyped(secret))
    unknown = await api.gql(VIEWER, token=generate_secret())

    # then
    assert_refused_credentials(typo)
    assert_refused_credentials(unknown)
    assert typo.body == unknown.body
    assert (await api.gql(VIEWER, token=secret)).ok()["viewer"]["kind"] == "API_KEY"


async def test_an_expired_key_is_refused_and_shown_as_expired(api: Api, clock: Clock) -> None:
    # given
    owner = await new_tenant(api)
    expires_at = (datetime.now(UTC) + timedelta(seconds=60)).isoformat()
    key_id, secret = await api.create_key(owner.token, owner.environment_id, expires_at=expires_at)
    (await api.gql(VIEWER, token=secret)).ok()

    # when
    clock.advance(61)
    result = await api.gql(VIEWER, token=secret)

    # then
    assert_refused_credentials(result)
    record = await read_key(api, owner.token, key_id)
    assert (record["status"], record["expiresAt"], record["totalRequests"]) == (
        "EXPIRED",
        expires_at,
        1,
    )
