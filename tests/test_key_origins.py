"""A key's allowed origins (`allowedOrigins`), for browser use: a request whose `Origin` is not
listed is refused with 403 FORBIDDEN, and so is one with no `Origin` at all."""

from __future__ import annotations

import pytest

from tests.check_helpers import VIEWER_KEY, create_key, refused, restricted_key, update_key
from tests.helpers import Api, new_tenant
from tests.template_helpers import bad_input

APP = "https://app.example.com"


async def test_a_listed_origin_is_served(api: Api) -> None:
    tenant = await new_tenant(api)
    key_id, secret = await restricted_key(
        api, tenant.token, tenant.environment_id, allowedOrigins=[APP, "http://localhost:3000"]
    )

    from_app = await api.gql(VIEWER_KEY, token=secret, headers={"Origin": APP})
    from_localhost = await api.gql(
        VIEWER_KEY, token=secret, headers={"Origin": "http://localhost:3000"}
    )

    assert from_app.ok() == {"viewer": {"kind": "API_KEY", "apiKey": {"id": key_id}}}
    assert from_localhost.ok() == {"viewer": {"kind": "API_KEY", "apiKey": {"id": key_id}}}


async def test_an_unlisted_origin_is_refused(api: Api) -> None:
    tenant = await new_tenant(api)
    _, secret = await restricted_key(api, tenant.token, tenant.environment_id, allowedOrigins=[APP])

    result = await api.gql(VIEWER_KEY, token=secret, headers={"Origin": "https://evil.example"})

    assert refused(result) == "This key may not be used from the origin https://evil.example."


async def test_a_request_without_an_origin_is_refused(api: Api) -> None:
    tenant = await new_tenant(api)
    _, secret = await restricted_key(api, tenant.token, tenant.environment_id, allowedOrigins=[APP])

    result = await api.gql(VIEWER_KEY, token=secret)

    assert refused(result) == "This key is for browsers: the request has no Origin header."


async def test_a_key_without_origins_needs_none(api: Api) -> None:
    tenant = await new_tenant(api)
    _, secret = await restricted_key(api, tenant.token, tenant.environment_id)

    without = await api.gql(VIEWER_KEY, token=secret)
    with_any = await api.gql(VIEWER_KEY, token=secret, headers={"Origin": "https://any.example"})

    assert without.ok()["viewer"]["kind"] == "API_KEY"
    assert with_any.ok()["viewer"]["kind"] == "API_KEY"


async def test_origins_are_stored_normalised_and_can_be_lifted(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    created = await create_key(
        api, tenant.token, tenant.environment_id, allowedOrigins=["HTTPS://App.Example.com/"]
    )
    key = created.ok()["createApiKey"]["apiKey"]
    secret = created.ok()["createApiKey"]["secret"]

    # when
    lifted = await update_key(api, tenant.token, key["id"], allowedOrigins=[])
    without_origin = await api.gql(VIEWER_KEY, token=secret)

    # then
    assert key["allowedOrigins"] == [APP]
    assert lifted.ok()["updateApiKey"]["allowedOrigins"] == []
    assert without_origin.ok()["viewer"]["kind"] == "API_KEY"


@pytest.mark.parametrize(
    "origin",
    ["app.example.com", "https://app.example.com/path", "ftp://app.example.com", "https://"],
)
async def test_what_is_not_an_origin_is_refused_naming_the_field(api: Api, origin: str) -> None:
    tenant = await new_tenant(api)

    result = await create_key(api, tenant.token, tenant.environment_id, allowedOrigins=[origin])

    assert bad_input(result) == (
        "allowedOrigins",
        f"{origin!r} is not an origin such as https://app.example.com.",
    )


async def test_at_most_fifty_origins(api: Api) -> None:
    tenant = await new_tenant(api)
    origins = [f"https://app{i}.example.com" for i in range(51)]

    result = await create_key(api, tenant.token, tenant.environment_id, allowedOrigins=origins)

    assert bad_input(result) == ("allowedOrigins", "At most 50 origins.")
