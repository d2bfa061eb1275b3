"""Shared by the key restriction tests: creating and updating restricted keys over HTTP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tests.helpers import Api, Clock, Result

KEY_FIELDS = "id scopes allowedCidrs allowedOrigins extraScopes"

CREATE_KEY = f"""
mutation($input: CreateApiKeyInput!) {{
  createApiKey(input: $input) {{ apiKey {{ {KEY_FIELDS} }} secret }}
}}
"""

UPDATE_KEY = f"""
mutation($input: UpdateApiKeyInput!) {{ updateApiKey(input: $input) {{ {KEY_FIELDS} }} }}
"""

VIEWER_KEY = "{ viewer { kind apiKey { id } } }"


async def create_key(
    api: Api, token: str, environment_id: str, scopes: list[str] | None = None, **restrictions: Any
) -> Result:
    """createApiKey with `restrictions` (allowedCidrs=..., allowedOrigins=..., ...)."""
    given = {"environmentId": environment_id, "name": "restricted"}
    given["scopes"] = scopes or ["VIEW_ANALYTICS"]  # type: ignore[assignment]
    return await api.gql(CREATE_KEY, {"input": given | restrictions}, token=token)


async def restricted_key(
    api: Api, token: str, environment_id: str, scopes: list[str] | None = None, **restrictions: Any
) -> tuple[str, str]:
    """(key id, secret) of a new key with these restrictions."""
    payload = (await create_key(api, token, environment_id, scopes, **restrictions)).ok()
    created = payload["createApiKey"]
    return str(created["apiKey"]["id"]), str(created["secret"])


async def update_key(api: Api, token: str, key_id: str, **changes: Any) -> Result:
    return await api.gql(UPDATE_KEY, {"input": {"id": key_id} | changes}, token=token)


def refused(result: Result) -> str:
    """The message of a whole request refused with 403 FORBIDDEN (no field ran)."""
    assert result.status == 403, (result.status, result.body)
    assert result.data is None
    assert result.codes == ["FORBIDDEN"], result.body
    message: str = result.errors[0]["message"]
    return message


def at_start_of_a_minute(clock: Clock) -> None:
    """Move the clock to one second past the next minute: events of the next seconds all
    fall in one minute."""
    now = clock()
    clock.offset += timedelta(seconds=61 - now.second, microseconds=-now.microsecond)
