"""Who may call each API key operation: every operation without credentials, without the scope,
on another tenant's objects (answered exactly like a missing one), and for each member role.
"""

from __future__ import annotations

import pytest

from keyplane.permissions.scopes import Role
from tests import factories
from tests.api_key_helpers import (
    ALL_SCOPES,
    CREATE_KEY,
    DELETE_KEY,
    GET_KEY,
    LIST_KEYS,
    MISSING_ENVIRONMENT_ID,
    MISSING_KEY_ID,
    REVOKE_KEY,
    ROTATE_KEY,
    UPDATE_KEY,
    list_names,
    read_key,
    snapshot,
)
from tests.factories import add_member
from tests.helpers import Api, Operation, each_operation, new_tenant
from tests.schema_client import SchemaApi

# --- one table of operations, for what every operation must do alike -----------------------


# Each operation's variables: (environment id, key id) -> variables.
OPERATIONS = {
    "createApiKey": Operation(
        CREATE_KEY,
        "createApiKey",
        lambda environment_id, _: {
            "input": {"environmentId": environment_id, "name": "new", "scopes": ["VIEW_ANALYTICS"]}
        },
    ),
    "environment.apiKeys": Operation(
        LIST_KEYS,
        "environment",
        lambda env_id, _: {"id": env_id},
        refused={"environment": {"apiKeys": None}},
    ),
    "apiKey": Operation(GET_KEY, "apiKey", lambda _, key_id: {"id": key_id}),
    "updateApiKey": Operation(
        UPDATE_KEY,
        "updateApiKey",
        lambda _, key_id: {
            "input": {"id": key_id, "name": "renamed", "scopes": ["MANAGE_PROJECT"]}
        },
    ),
    "revokeApiKey": Operation(REVOKE_KEY, "revokeApiKey", lambda _, key_id: {"id": key_id}),
    "deleteApiKey": Operation(DELETE_KEY, "deleteApiKey", lambda _, key_id: {"id": key_id}),
    "rotateApiKey": Operation(
        ROTATE_KEY,
        "rotateApiKey",
        lambda _, key_id: {"input": {"id": key_id, "expireOldInSeconds": 0}},
    ),
}
READING = ["environment.apiKeys", "apiKey"]
MANAGING = [name for name in OPERATIONS if name not in READING]

every_operation = each_operation(OPERATIONS)
every_managing_operation = each_operation({name: OPERATIONS[name] for name in MANAGING})


@every_operation
async def test_every_key_operation_without_credentials_is_unauthenticated(
    api: Api, operation: Operation
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(operation.document, operation.variables(owner.environment_id, key_id))

    # then
    assert result.status == 200
    assert result.data == {operation.field: None}
    assert result.codes == ["UNAUTHENTICATED"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


@every_operation
@pytest.mark.parametrize(
    "credential",
    ["key with GENERATE_DOCUMENTS only", "OAuth token with documents:generate only"],
)
async def test_every_key_operation_refuses_a_caller_without_the_scope(
    schema: SchemaApi, operation: Operation, credential: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, _ = await schema.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    if credential.startswith("key"):
        _, caller = await schema.create_key(
            owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"]
        )
    else:
        caller = schema.oauth.token(email=owner.email, scope="documents:generate")
    before = await snapshot(schema, owner.token, owner.environment_id)

    # when
    result = await schema.gql(
        operation.document, operation.variables(owner.environment_id, key_id), token=caller
    )

    # then
    assert result.data == operation.refused_data()
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(schema, owner.token, owner.environment_id) == before


@every_operation
async def test_every_key_operation_on_another_projects_objects_answers_like_a_missing_id(
    schema: SchemaApi, operation: Operation
) -> None:
    # given
    intruder = await factories.tenant(schema.app)
    victim = await factories.tenant(schema.app)
    key_id, _ = await schema.create_key(victim.token, victim.environment_id, ["VIEW_ANALYTICS"])
    before = await snapshot(schema, victim.token, victim.environment_id)

    # when
    elsewhere = await schema.gql(
        operation.document, operation.variables(victim.environment_id, key_id), token=intruder.token
    )
    missing = await schema.gql(
        operation.document,
        operation.variables(MISSING_ENVIRONMENT_ID, MISSING_KEY_ID),
        token=intruder.token,
    )

    # then
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere == missing
    assert await snapshot(schema, victim.token, victim.environment_id) == before


@every_operation
@pytest.mark.parametrize(
    "credential", ["key with every scope", "admin of the first environment only"]
)
async def test_every_key_operation_on_another_environment_answers_like_a_missing_id(
    schema: SchemaApi, operation: Operation, credential: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    other_environment_id = await schema.create_environment(owner.token, owner.project_id)
    key_id, _ = await schema.create_key(owner.token, other_environment_id, ["VIEW_ANALYTICS"])
    if credential.startswith("key"):
        _, caller = await schema.create_key(owner.token, owner.environment_id, ALL_SCOPES)
    else:
        caller = await add_member(
            schema, owner.project_id, Role.ADMIN, environment_ids=[owner.environment_id]
        )
    before = await snapshot(schema, owner.token, other_environment_id)

    # when
    elsewhere = await schema.gql(
        operation.document, operation.variables(other_environment_id, key_id), token=caller
    )
    missing = await schema.gql(
        operation.document,
        operation.variables(MISSING_ENVIRONMENT_ID, MISSING_KEY_ID),
        token=caller,
    )

    # then
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere == missing
    assert await snapshot(schema, owner.token, other_environment_id) == before


@every_managing_operation
@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
async def test_a_developer_or_viewer_member_cannot_manage_keys(
    schema: SchemaApi, operation: Operation, role: Role
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, _ = await schema.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    member = await add_member(schema, owner.project_id, role)
    before = await snapshot(schema, owner.token, owner.environment_id)

    # when
    result = await schema.gql(
        operation.document, operation.variables(owner.environment_id, key_id), token=member
    )

    # then
    assert result.data == operation.refused_data()
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(schema, owner.token, owner.environment_id) == before


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
async def test_a_developer_or_viewer_member_can_list_and_read_keys(
    schema: SchemaApi, role: Role
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, _ = await schema.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    member = await add_member(schema, owner.project_id, role)

    # when
    names = await list_names(schema, member, owner.environment_id)
    record = await read_key(schema, member, key_id)

    # then
    assert names == ["server"]
    assert record == await read_key(schema, owner.token, key_id)
