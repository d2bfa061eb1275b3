"""What the rate-limit tests share: the real default tiers (the `rate_limits` fixture, which each
test module imports), documents, header parsing and helpers.

The real default tiers apply in those tests (the suite's default fixture is generous). Nothing
sleeps: a test spends a bucket in well under a minute, so the moving window never slides during a
test.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tests.helpers import Api, OAuthIssuer, Result, Tenant, new_tenant

DEFAULT_TIERS = "api_key=100/minute;oauth=120/minute;jwt=200/minute;anonymous=30/minute"
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"
OTHER_IP = "198.51.100.20"

VIEWER_KIND = "{ viewer { kind } }"
VIEWER_RATE_LIMIT = "{ viewer { rateLimit { limit remaining resetAt windowSeconds tier } } }"
MANY_ROOT_FIELDS = (
    "{ viewer { kind } projects { id } again: viewer { kind } more: projects { id } }"
)
SIGN_UP = """
mutation SignUp($input: SignUpInput!) { signUp(input: $input) { accessToken } }
"""
LOG_IN = """
mutation LogIn($input: LogInInput!) { logIn(input: $input) { accessToken } }
"""
CREATE_KEY = """
mutation CreateKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id rateLimitPerMinute } secret }
}
"""
UPDATE_KEY = """
mutation UpdateKey($input: UpdateApiKeyInput!) {
  updateApiKey(input: $input) { id rateLimitPerMinute }
}
"""
GET_KEY = "query GetKey($id: ID!) { apiKey(id: $id) { id rateLimitPerMinute } }"
REVOKE_THREE_KEYS = """
mutation RevokeThree($a: ID!, $b: ID!, $c: ID!) {
  first: revokeApiKey(id: $a) { id status }
  second: revokeApiKey(id: $b) { id status }
  third: revokeApiKey(id: $c) { id status }
}
"""
REVOKE_THREE_KEYS_BY_FRAGMENT = """
mutation RevokeThree($a: ID!, $b: ID!, $c: ID!) { ...Revocations }
fragment Revocations on Mutation {
  first: revokeApiKey(id: $a) { id status }
  second: revokeApiKey(id: $b) { id status }
  third: revokeApiKey(id: $c) { id status }
}
"""
KEY_IDS = """
query KeyIds($id: ID!) { environment(id: $id) { apiKeys(first: 100) { edges { node { id } } } } }
"""
KEY_USAGE = """
query KeyUsage($id: ID!, $from: DateTime!, $to: DateTime!) {
  apiKey(id: $id) {
    totalRequests
    usage(from: $from, to: $to, granularity: MINUTE) { requests refused rateLimited }
  }
}
"""

RATE_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit-Policy",
    "RateLimit",
)
RATE_LIMIT_RE = re.compile(r'^"(?P<tier>\w+)";r=(?P<remaining>\d+);t=(?P<reset_in>\d+)$')


@pytest.fixture
def rate_limits() -> str:
    return DEFAULT_TIERS


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    """The X-RateLimit-* headers of one response."""

    limit: int
    remaining: int
    reset: int


def quota(headers: httpx.Headers) -> Quota:
    return Quota(
        limit=int(headers["X-RateLimit-Limit"]),
        remaining=int(headers["X-RateLimit-Remaining"]),
        reset=int(headers["X-RateLimit-Reset"]),
    )


async def new_key(api: Api, tenant: Tenant, *, rate_limit: int | None = None) -> tuple[str, str]:
    """A MANAGE_PROJECT key of the tenant's environment: (key id, secret)."""
    result = await api.gql(
        CREATE_KEY,
        {
            "input": {
                "environmentId": tenant.environment_id,
                "name": "server",
                "scopes": ["MANAGE_PROJECT", "VIEW_ANALYTICS"],
                "rateLimitPerMinute": rate_limit,
            }
        },
        token=tenant.token,
    )
    payload = result.ok()["createApiKey"]
    return str(payload["apiKey"]["id"]), str(payload["secret"])


async def spend(
    api: Api,
    count: int,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    query: str = VIEWER_KIND,
) -> list[Result]:
    """`count` concurrent requests."""
    return list(
        await asyncio.gather(*(api.gql(query, token=token, headers=headers) for _ in range(count)))
    )


def statuses(results: list[Result]) -> set[int]:
    return {result.status for result in results}


async def post_batch(
    api: Api, operations: list[tuple[str, dict[str, Any]]], *, token: str | None = None
) -> httpx.Response:
    body = [{"query": query, "variables": variables} for query, variables in operations]
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return await api.client.post("/graphql", json=body, headers=headers)


async def key_ids(api: Api, tenant: Tenant) -> list[str]:
    data = (await api.gql(KEY_IDS, {"id": tenant.environment_id}, token=tenant.token)).ok()
    return sorted(edge["node"]["id"] for edge in data["environment"]["apiKeys"]["edges"])


def create_key_input(tenant: Tenant, name: str) -> dict[str, Any]:
    return {"environmentId": tenant.environment_id, "name": name, "scopes": ["VIEW_ANALYTICS"]}


def aliased_create_keys(count: int) -> str:
    fields = "\n".join(
        f'  k{i}: createApiKey(input: {{environmentId: $e, name: "bulk-{i}", '
        "scopes: [VIEW_ANALYTICS]}) { apiKey { id } }"
        for i in range(count)
    )
    return f"mutation Bulk($e: ID!) {{\n{fields}\n}}"


@asynccontextmanager
async def api_at(app: Starlette, oauth: OAuthIssuer, ip: str) -> AsyncIterator[Api]:
    """Another client, calling from `ip`."""
    transport = httpx.ASGITransport(app=app, client=(ip, 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as client:
        yield Api(client, oauth)


async def anonymous_caller(api: Api) -> str | None:
    return None


async def dashboard_caller(api: Api) -> str | None:
    return await api.sign_up()


async def oauth_caller(api: Api) -> str | None:
    tenant = await new_tenant(api)
    return api.oauth.token(email=tenant.email)


async def api_key_caller(api: Api) -> str | None:
    _, secret = await new_key(api, await new_tenant(api))
    return secret
