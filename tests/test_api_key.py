"""API keys through GraphQL over HTTP: create, list, read, update, revoke, delete and rotate.

For every operation: success, no credentials, a caller without the scope, another tenant's
object (answered exactly like a missing one), and bad input. Then the secret's life: its
format, shown once, never stored, refused when mistyped, expired, revoked or rotated away,
and the usage counters it drives.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest
from starlette.applications import Starlette
from tortoise import connections

from keyplane.auth.api_key import generate_secret
from keyplane.models import Member, MemberEnvironment
from keyplane.permissions.scopes import Role, Scope
from tests import factories
from tests.helpers import Api, Clock, Result, in_future, new_tenant
from tests.schema_client import execute

SECRET_RE = re.compile(r"^fm_[0-9A-Za-z]{32}$")
ALL_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_PROJECT", "MANAGE_TEMPLATES", "VIEW_ANALYTICS"]
MISSING_KEY_ID = "key_" + "0" * 20
MISSING_ENVIRONMENT_ID = "env_" + "0" * 20
MAX_OVERLAP = 7 * 24 * 3600

KEY_FIELDS = """
fragment KeyFields on ApiKey {
  id name prefix scopes status createdAt expiresAt revokedAt lastUsedAt totalRequests
  createdBy { id }
  environment { id }
}
"""

CREATE_KEY = (
    """
mutation CreateKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { ...KeyFields } secret }
}
"""
    + KEY_FIELDS
)

LIST_KEYS = """
query ListKeys($id: ID!, $first: Int! = 20, $after: String, $status: ApiKeyStatus) {
  environment(id: $id) {
    apiKeys(first: $first, after: $after, status: $status) {
      edges { cursor node { id name status } }
      pageInfo { hasNextPage endCursor }
    }
  }
}
"""

KEY_SNAPSHOT = """
query KeySnapshot($id: ID!) {
  environment(id: $id) {
    apiKeys(first: 100) { edges { node { id name scopes status expiresAt revokedAt } } }
  }
}
"""

GET_KEY = (
    """
query GetKey($id: ID!) { apiKey(id: $id) { ...KeyFields } }
"""
    + KEY_FIELDS
)

UPDATE_KEY = """
mutation UpdateKey($input: UpdateApiKeyInput!) {
  updateApiKey(input: $input) { id name scopes status }
}
"""

REVOKE_KEY = """
mutation RevokeKey($id: ID!) { revokeApiKey(id: $id) { id status revokedAt } }
"""

DELETE_KEY = """
mutation DeleteKey($id: ID!) { deleteApiKey(id: $id) { id name scopes } }
"""

ROTATE_KEY = """
mutation RotateKey($input: RotateApiKeyInput!) {
  rotateApiKey(input: $input) {
    apiKey { id name prefix scopes status expiresAt environment { id } }
    secret
  }
}
"""

VIEWER = "{ viewer { kind scopes apiKey { id name } environment { id } } }"


# --- helpers -------------------------------------------------------------------------------


async def add_member(
    api: Api, project_id: str, role: Role, *, environment_ids: list[str] | None = None
) -> str:
    """A second user in the project (members are created through the model until invitations
    exist); None for environment_ids means access to all of them. Returns their token."""
    token = await api.sign_up()
    member = await Member.create(
        project_id=project_id,
        user_id=await api.user_id(token),
        role=role,
        all_environments=environment_ids is None,
    )
    for environment_id in environment_ids or []:
        await MemberEnvironment.create(member=member, environment_id=environment_id)
    return token


async def create(
    api: Api,
    token: str,
    environment_id: str,
    *,
    name: str = "server",
    scopes: list[str] | None = None,
    expires_at: str | None = None,
) -> Result:
    return await api.gql(
        CREATE_KEY,
        {
            "input": {
                "environmentId": environment_id,
                "name": name,
                "scopes": ALL_SCOPES if scopes is None else scopes,
                "expiresAt": expires_at,
            }
        },
        token=token,
    )


async def read_key(api: Api, token: str, key_id: str) -> dict[str, Any]:
    record: dict[str, Any] = (await api.gql(GET_KEY, {"id": key_id}, token=token)).ok()["apiKey"]
    return record


async def list_names(api: Api, token: str, environment_id: str, **arguments: Any) -> list[str]:
    result = await api.gql(LIST_KEYS, {"id": environment_id, **arguments}, token=token)
    edges = result.ok()["environment"]["apiKeys"]["edges"]
    return [edge["node"]["name"] for edge in edges]


async def key_read(app: Starlette, credential: str, key_id: str) -> dict[str, Any]:
    """`read_key` through the schema."""
    record: dict[str, Any] = (
        await execute(app, GET_KEY, {"id": key_id}, credential=credential)
    ).ok()["apiKey"]
    return record


async def names_listed(
    app: Starlette, credential: str, environment_id: str, **arguments: Any
) -> list[str]:
    """`list_names` through the schema."""
    result = await execute(
        app, LIST_KEYS, {"id": environment_id, **arguments}, credential=credential
    )
    edges = result.ok()["environment"]["apiKeys"]["edges"]
    return [edge["node"]["name"] for edge in edges]


async def snapshot(api: Api, token: str, environment_id: str) -> list[dict[str, Any]]:
    """What a mutation could change in an environment's keys (usage counters left out)."""
    result = await api.gql(KEY_SNAPSHOT, {"id": environment_id}, token=token)
    return [edge["node"] for edge in result.ok()["environment"]["apiKeys"]["edges"]]


async def revoke(api: Api, token: str, key_id: str) -> None:
    (await api.gql(REVOKE_KEY, {"id": key_id}, token=token)).ok()


def assert_refused_credentials(result: Result) -> None:
    assert result.status == 401
    assert result.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert result.data is None
    assert result.codes == ["UNAUTHENTICATED"]


def assert_bad_input(result: Result, field: str) -> None:
    assert result.status == 200
    assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT", "field": field}]


def mistyped(secret: str) -> str:
    """The secret with one character of its random part changed."""
    position = 10
    replacement = "b" if secret[position] == "a" else "a"
    return secret[:position] + replacement + secret[position + 1 :]


async def every_stored_row() -> str:
    """Every row of every table of the database, as text."""
    connection = connections.get("default")
    if connection.capabilities.dialect == "sqlite":
        _, tables = await connection.execute_query(
            "SELECT name FROM sqlite_master WHERE type = 'table'"
        )
    else:
        _, tables = await connection.execute_query(
            "SELECT table_name AS name FROM information_schema.tables "
            "WHERE table_schema = current_schema()"
        )
    dumped: list[str] = []
    for table in tables:
        _, rows = await connection.execute_query(f'SELECT * FROM "{table["name"]}"')
        dumped.extend(repr(tuple(row)) for row in rows)
    return "\n".join(dumped)


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- one table of operations, for what every operation must do alike -----------------------


@dataclass(frozen=True)
class Operation:
    document: str
    field: str
    variables: Callable[[str, str], dict[str, Any]]  # (environment id, key id) -> variables


OPERATIONS = {
    "createApiKey": Operation(
        CREATE_KEY,
        "createApiKey",
        lambda environment_id, _: {
            "input": {"environmentId": environment_id, "name": "new", "scopes": ["VIEW_ANALYTICS"]}
        },
    ),
    "environment.apiKeys": Operation(LIST_KEYS, "environment", lambda env_id, _: {"id": env_id}),
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

every_operation = pytest.mark.parametrize(
    "operation", list(OPERATIONS.values()), ids=list(OPERATIONS)
)
every_managing_operation = pytest.mark.parametrize(
    "operation", [OPERATIONS[name] for name in MANAGING], ids=MANAGING
)


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
    api: Api, operation: Operation, credential: str
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    if credential.startswith("key"):
        _, caller = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])
    else:
        caller = api.oauth.token(email=owner.email, scope="documents:generate")
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        operation.document, operation.variables(owner.environment_id, key_id), token=caller
    )

    # then
    assert result.status == 200
    assert result.data == {operation.field: None}
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


@every_operation
async def test_every_key_operation_on_another_projects_objects_answers_like_a_missing_id(
    api: Api, operation: Operation
) -> None:
    # given
    intruder = await new_tenant(api)
    victim = await new_tenant(api)
    key_id, _ = await api.create_key(victim.token, victim.environment_id, ["VIEW_ANALYTICS"])
    before = await snapshot(api, victim.token, victim.environment_id)

    # when
    elsewhere = await api.gql(
        operation.document, operation.variables(victim.environment_id, key_id), token=intruder.token
    )
    missing = await api.gql(
        operation.document,
        operation.variables(MISSING_ENVIRONMENT_ID, MISSING_KEY_ID),
        token=intruder.token,
    )

    # then
    assert elsewhere.status == 200
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere.body == missing.body
    assert await snapshot(api, victim.token, victim.environment_id) == before


@every_operation
@pytest.mark.parametrize(
    "credential", ["key with every scope", "admin of the first environment only"]
)
async def test_every_key_operation_on_another_environment_answers_like_a_missing_id(
    api: Api, operation: Operation, credential: str
) -> None:
    # given
    owner = await new_tenant(api)
    other_environment_id = await api.create_environment(owner.token, owner.project_id)
    key_id, _ = await api.create_key(owner.token, other_environment_id, ["VIEW_ANALYTICS"])
    if credential.startswith("key"):
        _, caller = await api.create_key(owner.token, owner.environment_id, ALL_SCOPES)
    else:
        caller = await add_member(
            api, owner.project_id, Role.ADMIN, environment_ids=[owner.environment_id]
        )
    before = await snapshot(api, owner.token, other_environment_id)

    # when
    elsewhere = await api.gql(
        operation.document, operation.variables(other_environment_id, key_id), token=caller
    )
    missing = await api.gql(
        operation.document,
        operation.variables(MISSING_ENVIRONMENT_ID, MISSING_KEY_ID),
        token=caller,
    )

    # then
    assert elsewhere.status == 200
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere.body == missing.body
    assert await snapshot(api, owner.token, other_environment_id) == before


@every_managing_operation
@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
async def test_a_developer_or_viewer_member_cannot_manage_keys(
    api: Api, operation: Operation, role: Role
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    member = await add_member(api, owner.project_id, role)
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        operation.document, operation.variables(owner.environment_id, key_id), token=member
    )

    # then
    assert result.status == 200
    assert result.data == {operation.field: None}
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
async def test_a_developer_or_viewer_member_can_list_and_read_keys(api: Api, role: Role) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    member = await add_member(api, owner.project_id, role)

    # when
    names = await list_names(api, member, owner.environment_id)
    record = await read_key(api, member, key_id)

    # then
    assert names == ["server"]
    assert record == await read_key(api, owner.token, key_id)


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


async def test_a_key_without_expiry_is_accepted_and_works_at_once(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await create(api, owner.token, owner.environment_id, scopes=["MANAGE_TEMPLATES"])
    created = result.ok()["createApiKey"]
    viewer = (await api.gql(VIEWER, token=created["secret"])).ok()["viewer"]

    # then
    assert created["apiKey"]["expiresAt"] is None
    assert viewer == {
        "kind": "API_KEY",
        "scopes": ["MANAGE_TEMPLATES"],
        "apiKey": {"id": created["apiKey"]["id"], "name": "server"},
        "environment": {"id": owner.environment_id},
    }


async def test_a_secret_is_fm_and_32_base62_characters_and_its_prefix_is_its_start(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api)

    # when
    first = (await create(api, owner.token, owner.environment_id)).ok()["createApiKey"]
    second = (await create(api, owner.token, owner.environment_id)).ok()["createApiKey"]

    # then
    for payload in (first, second):
        assert SECRET_RE.match(payload["secret"])
        assert payload["apiKey"]["prefix"] == payload["secret"][: len("fm_") + 8]
    assert first["secret"] != second["secret"]
    assert first["apiKey"]["id"] != second["apiKey"]["id"]
    assert not first["apiKey"]["id"].startswith("fm_")


async def test_a_name_of_64_characters_and_a_far_expiry_are_accepted(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await create(
        api, owner.token, owner.environment_id, name="n" * 64, expires_at=in_future(days=3650)
    )

    # then
    assert result.ok()["createApiKey"]["apiKey"]["name"] == "n" * 64


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scopes": []}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 65}, "name"),
        ({"expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}, "expiresAt"),
    ],
    ids=["empty scopes", "empty name", "blank name", "name too long", "past expiry"],
)
async def test_creating_a_key_with_bad_input_is_refused_naming_the_field(
    api: Api, change: dict[str, Any], field: str
) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await create(api, owner.token, owner.environment_id, **change)

    # then
    assert result.data == {"createApiKey": None}
    assert_bad_input(result, field)
    assert await snapshot(api, owner.token, owner.environment_id) == []


async def test_a_management_key_creates_keys_in_its_own_environment_for_its_creator(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api)
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await create(api, manager, owner.environment_id, scopes=["MANAGE_PROJECT"])

    # then
    key = result.ok()["createApiKey"]["apiKey"]
    assert (key["scopes"], key["createdBy"], key["environment"]) == (
        ["MANAGE_PROJECT"],
        {"id": owner.user_id},
        {"id": owner.environment_id},
    )


async def test_a_management_key_cannot_grant_scopes_it_lacks(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, manager = await api.create_key(
        owner.token, owner.environment_id, ["MANAGE_PROJECT", "VIEW_ANALYTICS"]
    )
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await create(
        api, manager, owner.environment_id, scopes=["VIEW_ANALYTICS", "GENERATE_DOCUMENTS"]
    )

    # then
    assert result.data == {"createApiKey": None}
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


async def test_an_oauth_token_grants_only_scopes_in_its_scope_claim(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    token = api.oauth.token(email=owner.email, scope="project:manage analytics:view")

    # when
    allowed = await create(api, token, owner.environment_id, scopes=["VIEW_ANALYTICS"])
    escalating = await create(api, token, owner.environment_id, scopes=["GENERATE_DOCUMENTS"])

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


async def test_the_secret_is_not_stored_in_the_database(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)
    await api.gql(VIEWER, token=secret)

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


# --- environment.apiKeys ---------------------------------------------------------------------


async def test_keys_are_listed_newest_first(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    for name in ["first", "second", "third"]:
        await factories.api_key(
            environment_id=owner.environment_id, created_by_id=owner.user_id, name=name
        )

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
        await factories.api_key(
            environment_id=owner.environment_id, created_by_id=owner.user_id, name=name
        )

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


@pytest.mark.parametrize("first", [1, 100])
async def test_a_page_may_hold_1_to_100_keys(app: Starlette, first: int) -> None:
    # given
    owner = await factories.tenant(app)
    for name in ["a", "b"]:
        await factories.api_key(
            environment_id=owner.environment_id, created_by_id=owner.user_id, name=name
        )

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

    # then
    assert result.data == {"environment": None}
    assert_bad_input(result, field)


async def test_keys_are_filtered_by_status(app: Starlette, clock: Clock) -> None:
    # given
    owner = await factories.tenant(app)
    now = datetime.now(UTC)

    async def new_key(name: str, **fields: Any) -> str:
        issued = await factories.api_key(
            environment_id=owner.environment_id, created_by_id=owner.user_id, name=name, **fields
        )
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
    await factories.api_key(
        environment_id=owner.environment_id, created_by_id=owner.user_id, name="worker"
    )
    reader = await factories.api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=[Scope.VIEW_ANALYTICS],
        name="dashboard",
    )

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
    key = await factories.api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=[Scope.GENERATE_DOCUMENTS],
    )

    # when
    result = await execute(app, VIEWER, credential=key.secret)

    # then
    assert result.ok()["viewer"]["apiKey"] == {"id": key.id, "name": "server"}


# --- updateApiKey ----------------------------------------------------------------------------


async def test_renaming_a_key_keeps_its_scopes(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    key = await factories.api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=[Scope.VIEW_ANALYTICS],
    )

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
    key = await factories.api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=[Scope.VIEW_ANALYTICS],
    )

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
    key = await factories.api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=[Scope.MANAGE_PROJECT],
    )
    manager = await factories.api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=[Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS],
    )

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


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"scopes": []}, "scopes"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "n" * 65}, "name"),
    ],
    ids=["empty scopes", "empty name", "blank name", "name too long"],
)
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


async def test_revoking_twice_changes_nothing(api: Api, clock: Clock) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    first = await api.gql(REVOKE_KEY, {"id": key_id}, token=owner.token)
    clock.advance(30)

    # when
    second = await api.gql(REVOKE_KEY, {"id": key_id}, token=owner.token)

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


async def test_deleting_a_deleted_key_is_not_found(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    (await api.gql(DELETE_KEY, {"id": key_id}, token=owner.token)).ok()

    # when
    result = await api.gql(DELETE_KEY, {"id": key_id}, token=owner.token)

    # then
    assert result.data == {"deleteApiKey": None}
    assert result.codes == ["NOT_FOUND"]


# --- rotateApiKey ----------------------------------------------------------------------------


async def test_rotating_issues_a_new_key_and_the_old_one_works_until_the_overlap_ends(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api)
    old_id, old_secret = await api.create_key(
        owner.token, owner.environment_id, ["VIEW_ANALYTICS", "MANAGE_TEMPLATES"], name="worker"
    )

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": old_id, "expireOldInSeconds": 600}}, token=owner.token
    )

    # then
    payload = result.ok()["rotateApiKey"]
    new_secret = payload["secret"]
    assert payload["apiKey"] == {
        "id": ANY,
        "name": "worker",
        "prefix": new_secret[:11],
        "scopes": ["MANAGE_TEMPLATES", "VIEW_ANALYTICS"],
        "status": "ACTIVE",
        "expiresAt": None,
        "environment": {"id": owner.environment_id},
    }
    new_id = payload["apiKey"]["id"]
    assert new_id != old_id
    assert SECRET_RE.match(new_secret)
    assert new_secret != old_secret
    assert (await api.gql(VIEWER, token=new_secret)).ok()["viewer"]["apiKey"]["id"] == new_id
    clock.advance(599)
    assert (await api.gql(VIEWER, token=old_secret)).ok()["viewer"]["apiKey"]["id"] == old_id
    clock.advance(2)
    assert_refused_credentials(await api.gql(VIEWER, token=old_secret))
    assert (await api.gql(VIEWER, token=new_secret)).ok()["viewer"]["apiKey"]["id"] == new_id
    assert (await read_key(api, owner.token, old_id))["status"] == "EXPIRED"


async def test_rotating_with_no_overlap_retires_the_old_key_at_once(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    old_id, old_secret = await api.create_key(owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": old_id, "expireOldInSeconds": 0}}, token=owner.token
    )

    # then
    new_secret = result.ok()["rotateApiKey"]["secret"]
    assert_refused_credentials(await api.gql(VIEWER, token=old_secret))
    assert (await api.gql(VIEWER, token=new_secret)).ok()["viewer"]["kind"] == "API_KEY"
    assert (await read_key(api, owner.token, old_id))["status"] == "EXPIRED"


async def test_rotating_accepts_an_overlap_of_seven_days(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    old_id, old_secret = await api.create_key(owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": old_id, "expireOldInSeconds": MAX_OVERLAP}}, token=owner.token
    )

    # then
    assert result.ok()["rotateApiKey"]["apiKey"]["status"] == "ACTIVE"
    old = await read_key(api, owner.token, old_id)
    expected = datetime.now(UTC) + timedelta(seconds=MAX_OVERLAP)
    assert abs(instant(old["expiresAt"]) - expected) < timedelta(minutes=1)
    assert (await api.gql(VIEWER, token=old_secret)).ok()["viewer"]["apiKey"]["id"] == old_id


async def test_a_management_key_may_rotate_itself(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 0}}, token=secret
    )

    # then
    payload = result.ok()["rotateApiKey"]
    assert payload["apiKey"]["scopes"] == ["MANAGE_PROJECT"]
    assert_refused_credentials(await api.gql(VIEWER, token=secret))
    assert (await api.gql(VIEWER, token=payload["secret"])).ok()["viewer"]["kind"] == "API_KEY"


async def test_a_key_expiring_at_the_end_of_time_can_be_rotated(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    last_instant = "9999-12-31T23:59:59.999999+00:00"
    key_id, _ = await api.create_key(owner.token, owner.environment_id, expires_at=last_instant)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 60}}, token=owner.token
    )

    # then
    assert result.ok()["rotateApiKey"]["apiKey"]["status"] == "ACTIVE"


@pytest.mark.parametrize("seconds", [-1, MAX_OVERLAP + 1])
async def test_rotating_with_an_overlap_outside_0_to_7_days_is_refused(
    api: Api, seconds: int
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": seconds}}, token=owner.token
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert_bad_input(result, "expireOldInSeconds")
    assert await snapshot(api, owner.token, owner.environment_id) == before


async def test_rotating_a_revoked_key_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    await revoke(api, owner.token, key_id)
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 60}}, token=owner.token
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert result.codes == ["CONFLICT"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


async def test_a_management_key_cannot_rotate_a_key_with_scopes_it_lacks(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 0}}, token=manager
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


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
