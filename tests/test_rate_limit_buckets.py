"""Rate limits over HTTP: the default tiers at their boundaries, and who shares a bucket."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from unittest.mock import ANY

import pytest
from starlette.applications import Starlette

from tests.helpers import Api, OAuthIssuer, new_tenant
from tests.rate_limit_helpers import (
    LOG_IN,
    OTHER_IP,
    VIEWER_KIND,
    Quota,
    anonymous_caller,
    api_at,
    api_key_caller,
    dashboard_caller,
    new_key,
    oauth_caller,
    quota,
    rate_limits,  # noqa: F401  (a fixture: the real default tiers)
    spend,
    statuses,
)

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
