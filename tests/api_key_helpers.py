"""What the API key tests share: their GraphQL documents, helpers and the table of key operations.

The tests, one file per operation (tests/test_api_key_*.py), go through GraphQL over HTTP, or
through the schema (tests/schema_client.py) where the transport plays no part.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from starlette.applications import Starlette
from tortoise import connections

from tests.helpers import Answer, Client, Result
from tests.schema_client import execute

SECRET_RE = re.compile(r"^fm_[0-9A-Za-z]{32}$")
ALL_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_PROJECT", "MANAGE_TEMPLATES", "VIEW_ANALYTICS"]
MISSING_KEY_ID = "key_" + "0" * 20
MISSING_ENVIRONMENT_ID = "env_" + "0" * 20
MAX_OVERLAP = 7 * 24 * 3600
# What createApiKey and updateApiKey both refuse, and the field each refusal names.
BAD_NAME_OR_SCOPES = [
    pytest.param({"scopes": []}, "scopes", id="empty scopes"),
    pytest.param({"name": ""}, "name", id="empty name"),
    pytest.param({"name": "   "}, "name", id="blank name"),
    pytest.param({"name": "n" * 65}, "name", id="name too long"),
]

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


async def create(
    api: Client,
    token: str,
    environment_id: str,
    *,
    name: str = "server",
    scopes: list[str] | None = None,
    expires_at: str | None = None,
) -> Answer:
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


async def read_key(api: Client, token: str, key_id: str) -> dict[str, Any]:
    record: dict[str, Any] = (await api.gql(GET_KEY, {"id": key_id}, token=token)).ok()["apiKey"]
    return record


async def list_names(api: Client, token: str, environment_id: str, **arguments: Any) -> list[str]:
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


async def snapshot(api: Client, token: str, environment_id: str) -> list[dict[str, Any]]:
    """What a mutation could change in an environment's keys (usage counters left out)."""
    result = await api.gql(KEY_SNAPSHOT, {"id": environment_id}, token=token)
    return [edge["node"] for edge in result.ok()["environment"]["apiKeys"]["edges"]]


async def revoke(api: Client, token: str, key_id: str) -> None:
    (await api.gql(REVOKE_KEY, {"id": key_id}, token=token)).ok()


def assert_refused_credentials(result: Result) -> None:
    assert result.status == 401
    assert result.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert result.data is None
    assert result.codes == ["UNAUTHENTICATED"]


def assert_bad_input(result: Answer, field: str) -> None:
    if isinstance(result, Result):
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
