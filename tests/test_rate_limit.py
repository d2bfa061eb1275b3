"""Rate limits over HTTP: the default tiers at their boundaries, separate buckets, headers, the
429 answer, what operations and batches cost, refused credentials, proxies, per-key limits, and
what happens when the rate-limit storage is down.

The real default tiers apply here (the suite's default fixture is generous). Nothing sleeps: a
test spends a bucket in well under a minute, so the moving window never slides during a test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import ANY

import httpx
import pytest
from starlette.applications import Starlette

from keyplane.auth.api_key import generate_secret
from keyplane.settings import Settings
from tests.helpers import Api, OAuthIssuer, Result, Tenant, cost, new_tenant

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


# --- the default tiers at their boundaries -------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "limit"),
    [
        pytest.param(api_key_caller, 100, id="api-key-100"),
        pytest.param(oauth_caller, 120, id="oauth-120"),
        pytest.param(dashboard_caller, 200, id="dashboard-jwt-200"),
        pytest.param(anonymous_caller, 30, id="anonymous-30"),
    ],
)
async def test_each_tier_admits_its_limit_in_a_minute_and_refuses_the_next_request(
    api: Api, caller: Callable[[Api], Awaitable[str | None]], limit: int
) -> None:
    # given
    token = await caller(api)
    first = await spend(api, limit - 1, token=token)

    # when
    last_admitted = await api.gql(VIEWER_KIND, token=token)
    refused = await api.gql(VIEWER_KIND, token=token)

    # then
    assert statuses(first) == {200}
    assert last_admitted.status == 200
    assert quota(last_admitted.headers) == Quota(limit=limit, remaining=0, reset=ANY)
    assert refused.status == 429
    assert refused.codes == ["RATE_LIMITED"]
    assert quota(refused.headers) == Quota(limit=limit, remaining=0, reset=ANY)


async def test_concurrent_requests_over_the_limit_admit_exactly_the_limit(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))

    # when
    results = await spend(api, 160, token=secret)

    # then
    assert sorted(result.status for result in results) == [200] * 100 + [429] * 60


# --- separate buckets ----------------------------------------------------------------------


async def test_a_users_dashboard_session_and_oauth_token_have_separate_buckets(api: Api) -> None:
    # given: the user's dashboard session has spent its whole bucket
    tenant = await new_tenant(api)
    oauth_token = api.oauth.token(email=tenant.email)
    # (making the tenant took 3: its project, its environment, the read of its membership)
    spent = await spend(api, 200 - 3, token=tenant.token)
    assert (await api.gql(VIEWER_KIND, token=tenant.token)).status == 429

    # when
    result = await api.gql(VIEWER_KIND, token=oauth_token)

    # then
    assert statuses(spent) == {200}
    assert result.ok() == {"viewer": {"kind": "OAUTH"}}
    assert quota(result.headers) == Quota(limit=120, remaining=119, reset=ANY)


async def test_every_dashboard_session_of_a_user_draws_on_the_same_bucket(api: Api) -> None:
    # given: two sessions of one user
    email = "two-sessions@example.com"
    first = await api.sign_up(email, password="correct horse")
    await spend(api, 10, token=first)
    login = await api.gql(LOG_IN, {"input": {"email": email, "password": "correct horse"}})
    second = login.ok()["logIn"]["accessToken"]

    # when
    result = await api.gql(VIEWER_KIND, token=second)

    # then
    assert quota(result.headers) == Quota(limit=200, remaining=200 - 11, reset=ANY)


async def test_tokens_of_one_oauth_client_share_a_bucket_and_other_clients_do_not(
    api: Api,
) -> None:
    # given
    tenant = await new_tenant(api)
    await spend(api, 5, token=api.oauth.token(email=tenant.email))

    # when
    same_client = await api.gql(VIEWER_KIND, token=api.oauth.token(email=tenant.email))
    other_client = await api.gql(
        VIEWER_KIND, token=api.oauth.token(email=tenant.email, client_id="other-client")
    )
    other_subject = await api.gql(
        VIEWER_KIND, token=api.oauth.token(email=tenant.email, sub="external-user-2")
    )

    # then
    assert quota(same_client.headers).remaining == 120 - 6
    assert quota(other_client.headers).remaining == 120 - 1
    assert quota(other_subject.headers).remaining == 120 - 1


async def test_two_keys_have_separate_buckets(api: Api) -> None:
    # given: the first key has spent its bucket
    tenant = await new_tenant(api)
    _, spent_secret = await new_key(api, tenant)
    _, fresh_secret = await new_key(api, tenant)
    await spend(api, 100, token=spent_secret)
    assert (await api.gql(VIEWER_KIND, token=spent_secret)).status == 429

    # when
    result = await api.gql(VIEWER_KIND, token=fresh_secret)

    # then
    assert result.ok() == {"viewer": {"kind": "API_KEY"}}
    assert quota(result.headers) == Quota(limit=100, remaining=99, reset=ANY)


async def test_two_client_addresses_have_separate_anonymous_buckets(
    api: Api, app: Starlette, oauth_issuer: OAuthIssuer
) -> None:
    # given: 203.0.113.7 has spent its bucket
    await spend(api, 30)
    assert (await api.gql(VIEWER_KIND)).status == 429

    # when
    async with api_at(app, oauth_issuer, OTHER_IP) as other:
        result = await other.gql(VIEWER_KIND)

    # then
    assert result.ok() == {"viewer": {"kind": "ANONYMOUS"}}
    assert quota(result.headers) == Quota(limit=30, remaining=29, reset=ANY)


# --- headers and the 429 answer ------------------------------------------------------------


async def test_a_response_carries_the_rate_limit_headers_counting_this_request(
    api: Api,
) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    await api.gql(VIEWER_KIND, token=secret)
    before = time.time()

    # when
    result = await api.gql(VIEWER_KIND, token=secret)

    # then
    after = time.time()
    headers = result.headers
    assert headers["X-RateLimit-Limit"] == "100"
    assert headers["X-RateLimit-Remaining"] == "98"
    # The first request's unit frees up a minute after it was spent.
    assert math.ceil(before - 1 + 60) <= int(headers["X-RateLimit-Reset"]) <= math.ceil(after + 60)
    assert headers["RateLimit-Policy"] == '"api_key";q=100;w=60'
    match = RATE_LIMIT_RE.match(headers["RateLimit"])
    assert match is not None, headers["RateLimit"]
    assert (match["tier"], match["remaining"]) == ("api_key", "98")
    assert 58 <= int(match["reset_in"]) <= 60


async def a_success(api: Api, tenant: Tenant) -> Result:
    return await api.gql(VIEWER_KIND, token=tenant.token)


async def a_graphql_error(api: Api, tenant: Tenant) -> Result:
    return await api.gql(GET_KEY, {"id": "key_" + "0" * 20}, token=tenant.token)


async def an_anonymous_request(api: Api, tenant: Tenant) -> Result:
    return await api.gql(VIEWER_KIND)


async def refused_credentials(api: Api, tenant: Tenant) -> Result:
    return await api.gql(VIEWER_KIND, token=generate_secret())


async def a_rate_limited_request(api: Api, tenant: Tenant) -> Result:
    _, secret = await new_key(api, tenant, rate_limit=1)
    await api.gql(VIEWER_KIND, token=secret)
    return await api.gql(VIEWER_KIND, token=secret)


@pytest.mark.parametrize(
    ("send", "status", "code"),
    [
        pytest.param(a_success, 200, None, id="success"),
        pytest.param(a_graphql_error, 200, "NOT_FOUND", id="graphql-error"),
        pytest.param(an_anonymous_request, 200, None, id="anonymous"),
        pytest.param(refused_credentials, 401, "UNAUTHENTICATED", id="refused-credentials"),
        pytest.param(a_rate_limited_request, 429, "RATE_LIMITED", id="rate-limited"),
    ],
)
async def test_every_graphql_response_carries_all_rate_limit_headers(
    api: Api,
    send: Callable[[Api, Tenant], Awaitable[Result]],
    status: int,
    code: str | None,
) -> None:
    # given
    tenant = await new_tenant(api)

    # when
    result = await send(api, tenant)

    # then
    assert (result.status, result.codes) == (status, [] if code is None else [code])
    assert [name for name in RATE_HEADERS if name in result.headers] == list(RATE_HEADERS)


async def test_a_refused_request_gets_429_with_retry_after_and_a_rate_limited_error(
    api: Api,
) -> None:
    # given
    await spend(api, 30)

    # when
    result = await api.gql(VIEWER_KIND)

    # then
    assert result.status == 429
    assert result.headers["content-type"] == "application/json"
    assert result.body == {
        "data": None,
        "errors": [
            {
                "message": ANY,
                "extensions": {
                    "code": "RATE_LIMITED",
                    "limit": 30,
                    "resetAt": ANY,
                    "retryAfter": int(result.headers["Retry-After"]),
                },
            }
        ],
    }
    assert re.fullmatch(r"[1-9][0-9]*", result.headers["Retry-After"])
    assert 1 <= int(result.headers["Retry-After"]) <= 60
    reset_at = datetime.fromisoformat(result.errors[0]["extensions"]["resetAt"])
    assert reset_at.tzinfo is not None
    reset_header = int(result.headers["X-RateLimit-Reset"])
    assert reset_header - 1 <= reset_at.timestamp() <= reset_header
    assert quota(result.headers).remaining == 0


async def test_viewer_rate_limit_matches_the_headers_and_asking_costs_nothing_extra(
    api: Api,
) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    plain = await api.gql(VIEWER_KIND, token=secret)

    # when
    asked = await api.gql(VIEWER_RATE_LIMIT, token=secret)
    after = await api.gql(VIEWER_KIND, token=secret)

    # then
    rate_limit = asked.ok()["viewer"]["rateLimit"]
    assert rate_limit == {
        "limit": 100,
        "remaining": 98,
        "resetAt": ANY,
        "windowSeconds": 60,
        "tier": "api_key",
    }
    assert (quota(plain.headers).remaining, quota(after.headers).remaining) == (99, 97)
    assert rate_limit["limit"] == quota(asked.headers).limit
    assert rate_limit["remaining"] == quota(asked.headers).remaining
    reset_at = datetime.fromisoformat(rate_limit["resetAt"]).timestamp()
    assert math.ceil(reset_at) == quota(asked.headers).reset


# --- what operations cost ------------------------------------------------------------------


async def test_a_query_costs_one_whatever_its_root_fields(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))

    # when
    result = await api.gql(MANY_ROOT_FIELDS, token=secret)

    # then
    assert result.status == 200
    assert quota(result.headers).remaining == 99


@pytest.mark.parametrize(
    "document", [REVOKE_THREE_KEYS, REVOKE_THREE_KEYS_BY_FRAGMENT], ids=["aliases", "fragment"]
)
async def test_a_mutation_costs_one_per_root_field_aliases_included(
    api: Api, document: str
) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    victims = [(await new_key(api, tenant))[0] for _ in range(3)]

    # when
    result = await api.gql(document, dict(zip("abc", victims, strict=True)), token=secret)

    # then
    data = result.ok()
    assert [data[name]["status"] for name in ("first", "second", "third")] == ["REVOKED"] * 3
    assert quota(result.headers).remaining == 100 - 3


async def test_a_batch_costs_the_sum_of_its_operations(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    operations: list[tuple[str, dict[str, Any]]] = [(VIEWER_KIND, {}), (MANY_ROOT_FIELDS, {})] * 2
    operations.append((VIEWER_RATE_LIMIT, {}))

    # when
    response = await post_batch(api, operations, token=secret)
    after = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert response.status_code == 200
    body = response.json()
    assert [item.get("errors") for item in body] == [None] * 5
    assert quota(response.headers).remaining == 100 - 5
    assert body[4]["data"]["viewer"]["rateLimit"]["remaining"] == 100 - 5
    assert quota(after.headers).remaining == 100 - 6


async def test_a_batch_of_mutations_costs_one_per_root_field_of_each(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    victims = [(await new_key(api, tenant))[0] for _ in range(3)]
    operations: list[tuple[str, dict[str, Any]]] = [
        (REVOKE_THREE_KEYS, dict(zip("abc", victims, strict=True))),
        (CREATE_KEY, {"input": create_key_input(tenant, "batched")}),
        (VIEWER_KIND, {}),
    ]

    # when
    response = await post_batch(api, operations, token=secret)

    # then
    assert response.status_code == 200
    assert [item.get("errors") for item in response.json()] == [None] * 3
    assert quota(response.headers).remaining == 100 - 5


async def test_a_batch_of_25_operations_runs_and_26_is_refused_with_a_json_error(
    api: Api,
) -> None:
    # when
    allowed = await post_batch(api, [(VIEWER_KIND, {})] * 25)
    too_many = await post_batch(api, [(VIEWER_KIND, {})] * 26)

    # then
    assert allowed.status_code == 200
    assert (
        allowed.json()
        == [{"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}}] * 25
    )
    assert too_many.status_code == 400
    assert too_many.headers["content-type"] == "application/json"
    assert too_many.json() == {
        "data": None,
        "errors": [
            {
                "message": "Too many operations",
                "extensions": {"code": "BAD_USER_INPUT", "field": "body"},
            }
        ],
    }


async def test_a_batch_larger_than_what_is_left_is_refused_and_none_of_it_runs(
    api: Api,
) -> None:
    # given: three requests left
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    await spend(api, 97, token=secret)
    keys_before = await key_ids(api, tenant)
    operations = [(CREATE_KEY, {"input": create_key_input(tenant, f"b{i}")}) for i in range(4)]

    # when
    response = await post_batch(api, operations, token=secret)
    after = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert response.status_code == 429
    assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert int(response.headers["Retry-After"]) >= 1
    assert await key_ids(api, tenant) == keys_before
    assert quota(after.headers).remaining == 2


async def test_a_document_of_more_mutations_than_what_is_left_is_refused_and_none_runs(
    api: Api,
) -> None:
    # given: three requests left
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    await spend(api, 97, token=secret)
    keys_before = await key_ids(api, tenant)

    # when
    result = await api.gql(aliased_create_keys(4), {"e": tenant.environment_id}, token=secret)

    # then
    assert result.status == 429
    assert result.codes == ["RATE_LIMITED"]
    assert await key_ids(api, tenant) == keys_before


async def test_thirty_aliased_create_api_key_in_one_document_cost_thirty(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    keys_before = await key_ids(api, tenant)

    # when
    result = await api.gql(aliased_create_keys(30), {"e": tenant.environment_id}, token=secret)

    # then
    assert len(result.ok()) == 30
    assert quota(result.headers).remaining == 100 - 30
    assert len(await key_ids(api, tenant)) == len(keys_before) + 30


async def test_fifty_aliased_create_api_key_are_charged_fifty_and_none_runs(api: Api) -> None:
    # given: over the 30-alias limit
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    keys_before = await key_ids(api, tenant)

    # when
    result = await api.gql(aliased_create_keys(50), {"e": tenant.environment_id}, token=secret)

    # then
    assert result.data is None
    assert result.codes == ["QUERY_TOO_COMPLEX"]
    assert quota(result.headers).remaining == 100 - 50
    assert await key_ids(api, tenant) == keys_before


# --- refused credentials and client addresses ----------------------------------------------


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(lambda: f"Bearer {generate_secret()}", id="unknown-key"),
        pytest.param(lambda: "Bearer garbage", id="garbage-token"),
        pytest.param(lambda: "Basic dXNlcjpwYXNz", id="other-scheme"),
    ],
)
async def test_invalid_credentials_drain_the_anonymous_bucket_and_then_get_429(
    api: Api, authorization: Callable[[], str]
) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await new_key(api, tenant)
    await api.gql(VIEWER_KIND, token=secret)
    spent_on_sign_up = 1

    # when
    refused = await spend(api, 30 - spent_on_sign_up, headers={"Authorization": authorization()})
    throttled = await api.gql(VIEWER_KIND, headers={"Authorization": authorization()})
    anonymous = await api.gql(VIEWER_KIND)
    with_key = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert statuses(refused) == {401}
    assert {quota(r.headers).limit for r in refused} == {30}
    assert throttled.status == 429
    assert throttled.codes == ["RATE_LIMITED"]
    assert anonymous.status == 429
    assert with_key.status == 200
    assert quota(with_key.headers) == Quota(limit=100, remaining=98, reset=ANY)


async def test_a_mistyped_key_is_charged_to_the_client_address_not_the_key(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api))
    mistyped = secret[:-4] + ("aaaa" if secret[-4:] != "aaaa" else "bbbb")

    # when
    refused = await api.gql(VIEWER_KIND, token=mistyped)
    with_key = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert refused.status == 401
    # The owner's sign-up took one from this address already.
    assert quota(refused.headers) == Quota(limit=30, remaining=30 - 2, reset=ANY)
    assert quota(with_key.headers).remaining == 99


async def test_rotating_x_forwarded_for_does_not_reset_the_anonymous_bucket(api: Api) -> None:
    # given
    spent = [
        await api.gql(VIEWER_KIND, headers={"X-Forwarded-For": f"192.0.2.{i}"}) for i in range(30)
    ]

    # when
    result = await api.gql(VIEWER_KIND, headers={"X-Forwarded-For": "192.0.2.200"})

    # then
    assert statuses(spent) == {200}
    assert result.status == 429


class TestBehindATrustedProxy:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        # The in-process client (203.0.113.7) plays the proxy.
        proxy = ipaddress.ip_network("203.0.113.0/24")
        return dataclasses.replace(settings, trusted_proxies=(proxy,))

    async def test_the_forwarded_client_address_has_its_own_bucket(self, api: Api) -> None:
        # given
        first_client = {"X-Forwarded-For": "192.0.2.1"}
        await spend(api, 30, headers=first_client)

        # when
        refused = await api.gql(VIEWER_KIND, headers=first_client)
        other = await api.gql(VIEWER_KIND, headers={"X-Forwarded-For": "192.0.2.2"})
        through_two_proxies = await api.gql(
            VIEWER_KIND, headers={"X-Forwarded-For": "192.0.2.1, 203.0.113.9"}
        )
        proxy_itself = await api.gql(VIEWER_KIND)

        # then
        assert refused.status == 429
        assert quota(other.headers).remaining == 29
        assert through_two_proxies.status == 429
        assert quota(proxy_itself.headers).remaining == 29

    async def test_an_address_the_client_sends_in_its_own_header_line_is_ignored(
        self, api: Api
    ) -> None:
        # given: some proxies (HAProxy) add a second X-Forwarded-For line instead of appending
        await spend(api, 30, headers={"X-Forwarded-For": "192.0.2.1"})

        # when
        results = [
            await api.client.post(
                "/graphql",
                json={"query": VIEWER_KIND},
                headers=[("X-Forwarded-For", f"10.0.0.{i}"), ("X-Forwarded-For", "192.0.2.1")],
            )
            for i in range(3)
        ]

        # then
        assert [response.status_code for response in results] == [429] * 3

    async def test_a_spoofed_address_left_of_the_real_client_is_ignored(self, api: Api) -> None:
        # given
        await spend(api, 30, headers={"X-Forwarded-For": "192.0.2.1"})

        # when
        result = await api.gql(VIEWER_KIND, headers={"X-Forwarded-For": "10.9.9.9, 192.0.2.1"})

        # then
        assert result.status == 429


async def test_a_peer_outside_the_trusted_proxies_cannot_choose_its_address(
    api: Api, app: Starlette, oauth_issuer: OAuthIssuer, settings: Settings
) -> None:
    # given: no proxy is trusted, and the peer claims to be someone else
    assert settings.trusted_proxies == ()
    async with api_at(app, oauth_issuer, OTHER_IP) as other:
        await spend(other, 30, headers={"X-Forwarded-For": "203.0.113.7"})

        # when
        refused = await other.gql(VIEWER_KIND, headers={"X-Forwarded-For": "203.0.113.7"})
    impersonated = await api.gql(VIEWER_KIND)

    # then
    assert refused.status == 429
    assert quota(impersonated.headers).remaining == 29


# --- sign-up and log-in; free endpoints ----------------------------------------------------


async def test_sign_up_and_log_in_cost_one_each_from_the_client_address_bucket(
    api: Api,
) -> None:
    # given
    credentials = {"email": "cost@example.com", "password": "correct horse"}

    # when
    signed_up = await api.gql(SIGN_UP, {"input": credentials | {"name": "Cost"}})
    logged_in = await api.gql(LOG_IN, {"input": credentials})
    token = logged_in.ok()["logIn"]["accessToken"]
    signed_in_log_in = await api.gql(LOG_IN, {"input": credentials}, token=token)
    anonymous = await api.gql(VIEWER_KIND)

    # then
    assert signed_up.ok()["signUp"]["accessToken"]
    assert quota(signed_up.headers).remaining == 29
    assert quota(logged_in.headers).remaining == 28
    assert signed_in_log_in.ok()["logIn"]["accessToken"]
    assert quota(signed_in_log_in.headers) == Quota(limit=200, remaining=199, reset=ANY)
    assert quota(anonymous.headers).remaining == 26


async def test_a_signed_in_caller_cannot_log_in_once_its_address_has_spent_its_bucket(
    api: Api,
) -> None:
    # given
    credentials = {"email": "spent@example.com", "password": "correct horse"}
    token = await api.sign_up(credentials["email"], credentials["password"])
    await spend(api, 29)

    # when
    log_in = await api.gql(LOG_IN, {"input": credentials}, token=token)
    query = await api.gql(VIEWER_KIND, token=token)

    # then
    assert log_in.status == 429
    assert log_in.codes == ["RATE_LIMITED"]
    assert query.ok() == {"viewer": {"kind": "JWT"}}


async def test_health_checks_and_the_graphiql_page_are_never_limited_nor_charged(
    api: Api,
) -> None:
    # given
    await spend(api, 29)

    # when
    responses = [
        *[await api.client.get("/healthz") for _ in range(5)],
        *[await api.client.get("/readyz") for _ in range(5)],
        *[await api.client.get("/graphql", headers={"Accept": "text/html"}) for _ in range(5)],
    ]
    last = await api.gql(VIEWER_KIND)
    after = [
        await api.client.get("/healthz"),
        await api.client.get("/readyz"),
        await api.client.get("/graphql", headers={"Accept": "text/html"}),
    ]

    # then
    assert [response.status_code for response in responses + after] == [200] * 18
    assert [
        name for response in responses + after for name in RATE_HEADERS if name in response.headers
    ] == []
    assert (last.status, quota(last.headers).remaining) == (200, 0)
    assert after[1].json() == {"status": "ok", "database": "ok", "rateLimitStorage": "ok"}


# --- per-key limits ------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -1, 10_001])
async def test_a_key_limit_outside_1_to_10000_is_bad_input(api: Api, value: int) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, _ = await new_key(api, tenant)

    # when
    created = await api.gql(
        CREATE_KEY,
        {"input": create_key_input(tenant, "bad") | {"rateLimitPerMinute": value}},
        token=tenant.token,
    )
    updated = await api.gql(
        UPDATE_KEY, {"input": {"id": key_id, "rateLimitPerMinute": value}}, token=tenant.token
    )

    # then
    assert (created.data, updated.data) == ({"createApiKey": None}, {"updateApiKey": None})
    for result in (created, updated):
        assert result.status == 200
        assert [e["extensions"] for e in result.errors] == [
            {"code": "BAD_USER_INPUT", "field": "rateLimitPerMinute"}
        ]
    assert (await api.gql(GET_KEY, {"id": key_id}, token=tenant.token)).ok() == {
        "apiKey": {"id": key_id, "rateLimitPerMinute": 100}
    }


async def test_a_key_shows_its_own_limit_or_the_tiers(api: Api) -> None:
    # given
    tenant = await new_tenant(api)

    # when
    default = await api.gql(
        CREATE_KEY, {"input": create_key_input(tenant, "d")}, token=tenant.token
    )
    lowest = await api.gql(
        CREATE_KEY,
        {"input": create_key_input(tenant, "l") | {"rateLimitPerMinute": 1}},
        token=tenant.token,
    )
    highest = await api.gql(
        CREATE_KEY,
        {"input": create_key_input(tenant, "h") | {"rateLimitPerMinute": 10_000}},
        token=tenant.token,
    )

    # then
    assert [
        result.ok()["createApiKey"]["apiKey"]["rateLimitPerMinute"]
        for result in (default, lowest, highest)
    ] == [100, 1, 10_000]


async def test_a_key_limited_to_5_a_minute_is_refused_on_its_6th_request(api: Api) -> None:
    # given
    _, secret = await new_key(api, await new_tenant(api), rate_limit=5)
    admitted = await spend(api, 5, token=secret)

    # when
    refused = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert statuses(admitted) == {200}
    assert sorted(quota(r.headers).remaining for r in admitted) == [0, 1, 2, 3, 4]
    assert refused.status == 429
    assert refused.errors[0]["extensions"]["limit"] == 5
    assert refused.headers["RateLimit-Policy"] == '"api_key";q=5;w=60'


async def test_updating_a_keys_limit_applies_from_its_next_request(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, secret = await new_key(api, tenant)

    # when
    updated = await api.gql(
        UPDATE_KEY, {"input": {"id": key_id, "rateLimitPerMinute": 2}}, token=tenant.token
    )
    requests = [await api.gql(VIEWER_KIND, token=secret) for _ in range(3)]

    # then
    assert updated.ok() == {"updateApiKey": {"id": key_id, "rateLimitPerMinute": 2}}
    assert [r.status for r in requests] == [200, 200, 429]
    assert quota(requests[0].headers).limit == 2


async def test_clearing_a_keys_limit_returns_it_to_the_tier(api: Api) -> None:
    # given: a 5/minute key that has spent its bucket
    tenant = await new_tenant(api)
    key_id, secret = await new_key(api, tenant, rate_limit=5)
    await spend(api, 5, token=secret)
    assert (await api.gql(VIEWER_KIND, token=secret)).status == 429

    # when
    cleared = await api.gql(
        UPDATE_KEY, {"input": {"id": key_id, "clearRateLimit": True}}, token=tenant.token
    )
    result = await api.gql(VIEWER_KIND, token=secret)

    # then
    assert cleared.ok() == {"updateApiKey": {"id": key_id, "rateLimitPerMinute": 100}}
    assert result.ok() == {"viewer": {"kind": "API_KEY"}}
    assert quota(result.headers).limit == 100


async def test_a_rate_limited_key_request_counts_as_rate_limited_not_in_total_requests(
    api: Api,
) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, secret = await new_key(api, tenant, rate_limit=5)
    results = await spend(api, 7, token=secret)
    now = datetime.now(UTC)

    # when
    usage = await api.gql(
        KEY_USAGE,
        {
            "id": key_id,
            "from": (now - timedelta(hours=1)).isoformat(),
            "to": (now + timedelta(hours=1)).isoformat(),
        },
        token=tenant.token,
    )

    # then
    assert sorted(r.status for r in results) == [200] * 5 + [429] * 2
    key = usage.ok()["apiKey"]
    assert key["totalRequests"] == 5
    assert {
        name: sum(point[name] for point in key["usage"])
        for name in ("requests", "refused", "rateLimited")
    } == {"requests": 5, "refused": 2, "rateLimited": 2}


# --- when the rate-limit storage is down ---------------------------------------------------


class TestWithTheStorageDown:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, rate_limit_storage=UNREACHABLE_REDIS)

    async def test_requests_still_succeed_and_health_counts_the_failures(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)
        _, secret = await new_key(api, tenant)

        # when
        results = await spend(api, 3, token=secret)
        health = await api.client.get("/healthz")
        ready = await api.client.get("/readyz")

        # then
        assert statuses(results) == {200}
        assert health.status_code == 200
        assert health.json()["rateLimitStorageFailures"] > 0
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "database": "ok",
            "rateLimitStorage": "unavailable (failing open)",
        }


class TestWithTheStorageDownFailingClosed:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(
            settings, rate_limit_storage=UNREACHABLE_REDIS, rate_limit_fail_closed=True
        )

    async def test_requests_get_503_with_retry_after(self, api: Api) -> None:
        # when
        query = await api.gql(VIEWER_KIND)
        refused_credentials = await api.gql(VIEWER_KIND, token=generate_secret())
        health = await api.client.get("/healthz")
        ready = await api.client.get("/readyz")

        # then
        for result in (query, refused_credentials):
            assert result.status == 503
            assert int(result.headers["Retry-After"]) >= 1
            assert result.data is None
            assert result.codes == ["SERVICE_UNAVAILABLE"]
        assert health.status_code == 200
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "database": "ok",
            "rateLimitStorage": "unavailable",
        }
