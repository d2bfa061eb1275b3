"""A real third-party GraphQL client, graphql-python's `gql` over its httpx transport, against a
real `keyplane serve`: a batch, partial data, a revoked key's 401 and a 429, as an integrator's
code meets them.

What gql makes of an error answer: a body with `data` or `errors` is a GraphQL result whatever
the status, so a 401 or a 429 of one operation raises `TransportQueryError` (the error's code
and `retryAfter` in its extensions; the `Retry-After` header in `transport.response_headers`);
the HTTP status itself reaches only the underlying httpx client (an event hook, below). A batch's
429 is no list of results, and raises `TransportServerError` whose `code` is the status.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError, TransportServerError
from gql.transport.httpx import HTTPXAsyncTransport

from tests.helpers import Api, OAuthIssuer, Tenant, new_tenant
from tests.serve_process import keyplane_serve

GENEROUS = "api_key=5000/minute;oauth=5000/minute;jwt=5000/minute;anonymous=5000/minute"
VIEWER = "query Viewer { viewer { kind apiKey { id scopes } } }"
KEY = "query Key($id: ID!) { apiKey(id: $id) { id name } }"
VIEWER_AND_ACTIVITY = """
query ViewerAndActivity($environmentId: ID!) {
  viewer { kind }
  activity(environmentId: $environmentId) { edges { node { id } } }
}
"""
REVOKE = "mutation Revoke($id: ID!) { revokeApiKey(id: $id) { id status } }"
CREATE_LIMITED_KEY = """
mutation CreateKey($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One `keyplane serve` (production profile) for the module's tests."""
    with keyplane_serve(tmp_path_factory.mktemp("gql"), KEYPLANE_RATE_LIMITS=GENEROUS) as base:
        yield base


@pytest.fixture
async def remote(server: str, oauth_issuer: OAuthIssuer) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        yield Api(client, oauth_issuer)


@pytest.fixture
async def tenant(remote: Api) -> Tenant:
    return await new_tenant(remote)


class Integrator:
    """gql's async client over its httpx transport, with the statuses the server answered."""

    def __init__(self, server: str, secret: str) -> None:
        self.statuses: list[int] = []

        async def note(response: httpx.Response) -> None:
            self.statuses.append(response.status_code)

        self.transport = HTTPXAsyncTransport(
            url=f"{server}/graphql",
            headers={"Authorization": f"Bearer {secret}"},
            event_hooks={"response": [note]},
        )

    async def execute(self, query: str, **variables: Any) -> dict[str, Any]:
        async with Client(transport=self.transport) as session:
            result: dict[str, Any] = await session.execute(
                GraphQLRequest(query, variable_values=variables or None)
            )
            return result

    async def execute_batch(self, requests: list[GraphQLRequest]) -> list[dict[str, Any]]:
        async with Client(transport=self.transport) as session:
            results: list[dict[str, Any]] = await session.execute_batch(requests)
            return results


async def test_a_batch_of_operations_is_answered_in_order(
    server: str, remote: Api, tenant: Tenant
) -> None:
    # given
    key_id, secret = await remote.create_key(
        tenant.token, tenant.environment_id, ["VIEW_ANALYTICS"], name="reader"
    )
    integrator = Integrator(server, secret)

    # when
    results = await integrator.execute_batch(
        [
            GraphQLRequest(VIEWER),
            GraphQLRequest(KEY, variable_values={"id": key_id}),
            GraphQLRequest(
                VIEWER_AND_ACTIVITY, variable_values={"environmentId": tenant.environment_id}
            ),
        ]
    )

    # then: one HTTP request, three answers
    assert integrator.statuses == [200]
    assert results == [
        {"viewer": {"kind": "API_KEY", "apiKey": {"id": key_id, "scopes": ["VIEW_ANALYTICS"]}}},
        {"apiKey": {"id": key_id, "name": "reader"}},
        {"viewer": {"kind": "API_KEY"}, "activity": {"edges": ANY}},
    ]


async def test_a_refused_field_is_null_and_the_rest_of_the_data_is_kept(
    server: str, remote: Api, tenant: Tenant
) -> None:
    # given: a key that may generate documents, not read the activity log
    _, secret = await remote.create_key(tenant.token, tenant.environment_id, ["GENERATE_DOCUMENTS"])
    integrator = Integrator(server, secret)

    # when
    with pytest.raises(TransportQueryError) as refused:
        await integrator.execute(VIEWER_AND_ACTIVITY, environmentId=tenant.environment_id)

    # then
    assert integrator.statuses == [200]
    assert refused.value.data == {"viewer": {"kind": "API_KEY"}, "activity": None}
    assert [(e["path"], e["extensions"]["code"]) for e in refused.value.errors or []] == [
        (["activity"], "FORBIDDEN")
    ]


async def test_a_revoked_key_is_refused_with_401(server: str, remote: Api, tenant: Tenant) -> None:
    # given
    key_id, secret = await remote.create_key(tenant.token, tenant.environment_id)
    integrator = Integrator(server, secret)
    before = await integrator.execute(VIEWER)
    (await remote.gql(REVOKE, {"id": key_id}, token=tenant.token)).ok()

    # when
    with pytest.raises(TransportQueryError) as refused:
        await integrator.execute(VIEWER)

    # then
    assert before["viewer"]["kind"] == "API_KEY"
    assert integrator.statuses == [200, 401]
    assert refused.value.data is None
    assert [e["extensions"]["code"] for e in refused.value.errors or []] == ["UNAUTHENTICATED"]
    headers = integrator.transport.response_headers
    assert headers is not None
    assert headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def limited_key(remote: Api, tenant: Tenant) -> str:
    """A key allowed one request a minute."""
    result = await remote.gql(
        CREATE_LIMITED_KEY,
        {
            "input": {
                "environmentId": tenant.environment_id,
                "name": "limited",
                "scopes": ["VIEW_ANALYTICS"],
                "rateLimitPerMinute": 1,
            }
        },
        token=tenant.token,
    )
    return str(result.ok()["createApiKey"]["secret"])


async def test_a_429_tells_the_client_when_to_retry(
    server: str, remote: Api, tenant: Tenant
) -> None:
    # given
    integrator = Integrator(server, await limited_key(remote, tenant))
    await integrator.execute(VIEWER)

    # when
    with pytest.raises(TransportQueryError) as refused:
        await integrator.execute(VIEWER)

    # then
    assert integrator.statuses == [200, 429]
    [error] = refused.value.errors or []
    assert error["extensions"]["code"] == "RATE_LIMITED"
    headers = integrator.transport.response_headers
    assert headers is not None
    assert 1 <= int(headers["retry-after"]) == error["extensions"]["retryAfter"] <= 60


async def test_a_batch_refused_with_429_raises_the_status(
    server: str, remote: Api, tenant: Tenant
) -> None:
    # given: a batch of two costs two units; the key has one a minute
    integrator = Integrator(server, await limited_key(remote, tenant))

    # when
    with pytest.raises(TransportServerError) as refused:
        await integrator.execute_batch([GraphQLRequest(VIEWER), GraphQLRequest(VIEWER)])

    # then
    assert (refused.value.code, integrator.statuses) == (429, [429])
    headers = integrator.transport.response_headers
    assert headers is not None
    assert int(headers["retry-after"]) >= 1
