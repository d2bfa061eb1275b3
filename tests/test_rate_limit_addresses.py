"""Rate limits over HTTP: refused credentials and client addresses (proxies included), sign-up
and log-in, and the endpoints that are never charged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Callable
from unittest.mock import ANY

import pytest
from starlette.applications import Starlette

from keyplane.auth.api_key import generate_secret
from keyplane.settings import Settings
from tests.helpers import Api, OAuthIssuer, new_tenant
from tests.rate_limit_helpers import (
    LOG_IN,
    OTHER_IP,
    RATE_HEADERS,
    SIGN_UP,
    VIEWER_KIND,
    Quota,
    api_at,
    new_key,
    quota,
    rate_limits,  # noqa: F401  (a fixture: the real default tiers)
    spend,
    statuses,
)

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
