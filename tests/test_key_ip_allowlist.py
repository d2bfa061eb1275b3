"""A key's IP allowlist (`allowedCidrs`): requests from any other address get 403 FORBIDDEN,
logged as KEY_IP_DENIED once per key and minute."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from starlette.applications import Starlette

from keyplane.settings import Settings
from tests.check_helpers import (
    VIEWER_KEY,
    at_start_of_a_minute,
    create_key,
    refused,
    restricted_key,
    update_key,
)
from tests.helpers import Api, Clock, OAuthIssuer, new_tenant
from tests.rate_limit_helpers import api_at
from tests.template_helpers import bad_input

# The in-process test client calls from 203.0.113.7 (conftest).
ACTIVITY = """
query($env: ID!) {
  activity(environmentId: $env, kinds: [KEY_IP_DENIED]) { edges { node { kind actor ip count } } }
}
"""


async def test_a_key_works_from_inside_its_cidrs_and_is_refused_outside(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    inside_id, inside = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["203.0.113.0/24", "2001:db8::/32"]
    )
    _, outside = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["198.51.100.0/24"]
    )

    # when
    allowed = await api.gql(VIEWER_KEY, token=inside)
    denied = await api.gql(VIEWER_KEY, token=outside)

    # then
    assert allowed.ok() == {"viewer": {"kind": "API_KEY", "apiKey": {"id": inside_id}}}
    message = refused(denied)
    assert "203.0.113.7" in message
    assert "allowedCidrs" in message


async def test_the_key_shows_its_cidrs_normalised(api: Api) -> None:
    tenant = await new_tenant(api)

    created = await create_key(
        api,
        tenant.token,
        tenant.environment_id,
        allowedCidrs=["10.1.2.3/8", "192.0.2.1", "2001:DB8::/32", "10.0.0.0/8"],
    )

    key = created.ok()["createApiKey"]["apiKey"]
    assert key["allowedCidrs"] == ["10.0.0.0/8", "192.0.2.1/32", "2001:db8::/32"]


async def test_ipv6_clients_are_matched_against_ipv6_cidrs(
    api: Api, app: Starlette, oauth_issuer: OAuthIssuer
) -> None:
    # given
    tenant = await new_tenant(api)
    _, v6_key = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["2001:db8:1::/48"]
    )
    _, v4_key = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["203.0.113.0/24"]
    )

    async with (
        api_at(app, oauth_issuer, "2001:db8:1::7") as inside,
        api_at(app, oauth_issuer, "2001:db8:2::7") as outside,
    ):
        # when
        from_inside = await inside.gql(VIEWER_KEY, token=v6_key)
        from_outside = await outside.gql(VIEWER_KEY, token=v6_key)
        v4_key_from_v6 = await inside.gql(VIEWER_KEY, token=v4_key)

    # then
    assert from_inside.ok()["viewer"]["kind"] == "API_KEY"
    assert "2001:db8:2::7" in refused(from_outside)
    refused(v4_key_from_v6)


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    api: Api, settings: Settings
) -> None:
    # given: no trusted proxy; the client claims an address inside the key's CIDR
    assert settings.trusted_proxies == ()
    tenant = await new_tenant(api)
    _, secret = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["192.0.2.0/24"]
    )

    # when
    spoofed = await api.gql(VIEWER_KEY, token=secret, headers={"X-Forwarded-For": "192.0.2.1"})

    # then
    assert "203.0.113.7" in refused(spoofed)


class TestBehindATrustedProxy:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        # The in-process client (203.0.113.7) plays the proxy.
        proxy = ipaddress.ip_network("203.0.113.0/24")
        return dataclasses.replace(settings, trusted_proxies=(proxy,))

    async def test_the_forwarded_client_address_is_the_one_checked(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)
        _, secret = await restricted_key(
            api, tenant.token, tenant.environment_id, allowedCidrs=["192.0.2.0/24"]
        )

        # when
        forwarded_inside = await api.gql(
            VIEWER_KEY, token=secret, headers={"X-Forwarded-For": "192.0.2.1"}
        )
        forwarded_outside = await api.gql(
            VIEWER_KEY, token=secret, headers={"X-Forwarded-For": "198.51.100.1"}
        )
        proxy_itself = await api.gql(VIEWER_KEY, token=secret)

        # then
        assert forwarded_inside.ok()["viewer"]["kind"] == "API_KEY"
        assert "198.51.100.1" in refused(forwarded_outside)
        assert "203.0.113.7" in refused(proxy_itself)


async def test_an_update_of_the_cidrs_applies_from_the_next_request(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, secret = await restricted_key(api, tenant.token, tenant.environment_id)
    (await api.gql(VIEWER_KEY, token=secret)).ok()  # the key is now kept verified

    # when
    narrowed = await update_key(api, tenant.token, key_id, allowedCidrs=["198.51.100.0/24"])
    after_narrowing = await api.gql(VIEWER_KEY, token=secret)
    lifted = await update_key(api, tenant.token, key_id, allowedCidrs=[])
    after_lifting = await api.gql(VIEWER_KEY, token=secret)

    # then
    assert narrowed.ok()["updateApiKey"]["allowedCidrs"] == ["198.51.100.0/24"]
    refused(after_narrowing)
    assert lifted.ok()["updateApiKey"]["allowedCidrs"] == []
    assert after_lifting.ok()["viewer"]["kind"] == "API_KEY"


@pytest.mark.parametrize(
    ("cidrs", "problem"),
    [
        (["not-an-address"], "'not-an-address' is not an IPv4 or IPv6 address or CIDR."),
        (["10.0.0.0/33"], "'10.0.0.0/33' is not an IPv4 or IPv6 address or CIDR."),
        ([f"10.0.{i}.0/24" for i in range(51)], "At most 50 CIDRs."),
    ],
    ids=["garbage", "prefix too long", "51 CIDRs"],
)
async def test_bad_cidrs_are_refused_naming_the_field(
    api: Api, cidrs: list[str], problem: str
) -> None:
    tenant = await new_tenant(api)

    result = await create_key(api, tenant.token, tenant.environment_id, allowedCidrs=cidrs)

    assert bad_input(result) == ("allowedCidrs", problem)


async def test_refusals_are_logged_once_per_key_and_minute_with_their_count(
    api: Api, app: Starlette, clock: Clock
) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, secret = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["198.51.100.0/24"]
    )
    at_start_of_a_minute(clock)

    # when
    for _ in range(3):
        refused(await api.gql(VIEWER_KEY, token=secret))
    await app.state.services.usage.flush()
    log = await api.gql(ACTIVITY, {"env": tenant.environment_id}, token=tenant.token)

    # then
    assert log.ok()["activity"]["edges"] == [
        {
            "node": {
                "kind": "KEY_IP_DENIED",
                "actor": f"key:{key_id}",
                "ip": "203.0.113.7",
                "count": 3,
            }
        }
    ]


async def test_a_rotated_key_keeps_its_cidrs(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    key_id, _ = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedCidrs=["198.51.100.0/24"]
    )

    # when
    rotated = await api.gql(
        """mutation($input: RotateApiKeyInput!) {
             rotateApiKey(input: $input) { apiKey { allowedCidrs } secret }
           }""",
        {"input": {"id": key_id}},
        token=tenant.token,
    )
    payload = rotated.ok()["rotateApiKey"]

    # then
    assert payload["apiKey"]["allowedCidrs"] == ["198.51.100.0/24"]
    refused(await api.gql(VIEWER_KEY, token=payload["secret"]))
