"""OAuth callers: RFC 9068 access tokens from our issuer, verified and mapped to users."""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from keyplane.models import Member, OAuthIdentity
from keyplane.permissions.scopes import Role
from keyplane.settings import Settings
from tests.helpers import Api, OAuthIssuer

VIEWER = "{ viewer { kind scopes user { id email } apiKey { id } environment { id } } }"
CREATE_API_KEY = """
mutation CreateApiKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { name scopes createdBy { email } } }
}
"""
ENVIRONMENT_KEYS = """
query EnvironmentKeys($id: ID!) {
  environment(id: $id) { id apiKeys(first: 10) { edges { node { id name } } } }
}
"""
API_KEY = "query ApiKey($id: ID!) { apiKey(id: $id) { id name } }"

EMAIL = "ada@example.com"
ALL_OAUTH_SCOPES = "documents:generate templates:manage analytics:view project:manage"
REFUSED_BODY = {
    "data": None,
    "errors": [
        {"message": "Invalid or expired credentials.", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}
REFUSED_HEADER = 'Bearer error="invalid_token"'


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def segment(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def claims_of(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def hs256_token(issuer: OAuthIssuer) -> str:
    claims = claims_of(issuer.token(email=EMAIL))
    return jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"typ": "at+jwt"})


def unsigned_token(issuer: OAuthIssuer) -> str:
    claims = claims_of(issuer.token(email=EMAIL))
    return f"{segment({'alg': 'none', 'typ': 'at+jwt', 'kid': 'rsa-1'})}.{segment(claims)}."


def tampered_token(issuer: OAuthIssuer) -> str:
    header, _, signature = issuer.token(email=EMAIL).split(".")
    claims = claims_of(issuer.token(email=EMAIL))
    claims["scope"] = ALL_OAUTH_SCOPES + " admin"
    claims["sub"] = "someone-else"
    return f"{header}.{segment(claims)}.{signature}"


def foreign_key_token(issuer: OAuthIssuer, *, kid: str | None) -> str:
    """A well-formed token signed by a key the issuer never published."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = claims_of(issuer.token(email=EMAIL))
    headers: dict[str, Any] = {"typ": "at+jwt"}
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


def resigned_without(issuer: OAuthIssuer, claim: str) -> str:
    """A token properly signed by the issuer but lacking one claim."""
    claims = claims_of(issuer.token(email=EMAIL))
    del claims[claim]
    headers = {"typ": "at+jwt", "kid": "rsa-1"}
    return jwt.encode(claims, issuer.rsa_key, algorithm="RS256", headers=headers)


INVALID_TOKENS: dict[str, Callable[[OAuthIssuer], str]] = {
    "wrong-audience": lambda i: i.token(email=EMAIL, aud="https://other.example"),
    "wrong-issuer": lambda i: i.token(email=EMAIL, iss="https://evil.example"),
    "expired": lambda i: i.token(email=EMAIL, lifetime=-60),
    "not-yet-valid": lambda i: i.token(email=EMAIL, nbf=int(time.time()) + 600),
    "missing-jti": lambda i: i.token(email=EMAIL, jti=None),
    "missing-client-id": lambda i: i.token(email=EMAIL, client_id=None),
    "missing-exp": lambda i: i.token(email=EMAIL, exp=None),
    "missing-sub": lambda i: resigned_without(i, "sub"),
    "typ-jwt": lambda i: i.token(email=EMAIL, typ="JWT"),
    "typ-missing": lambda i: jwt.encode(
        claims_of(i.token(email=EMAIL)), i.rsa_key, algorithm="RS256", headers={"kid": "rsa-1"}
    ),
    "alg-hs256": hs256_token,
    "alg-none": unsigned_token,
    "tampered-claims": tampered_token,
    "unknown-kid": lambda i: foreign_key_token(i, kid="rsa-2"),
    "known-kid-wrong-key": lambda i: foreign_key_token(i, kid="rsa-1"),
    "no-kid-among-several-keys": lambda i: foreign_key_token(i, kid=None),
}


async def sign_up_with_project(api: Api) -> tuple[str, str, str]:
    """Ada signs up and creates a project with one environment: (token, project, environment)."""
    token = await api.sign_up(EMAIL)
    project_id = await api.create_project(token, "Docs")
    environment_id = await api.create_environment(token, project_id, "Production")
    return token, project_id, environment_id


def assert_refused(result: Any) -> None:
    assert (result.status, result.body) == (401, REFUSED_BODY)
    assert result.headers["www-authenticate"] == REFUSED_HEADER


# Valid tokens


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_a_valid_token_for_a_verified_email_acts_as_that_user(api: Api, alg: str) -> None:
    # given
    user_id = await api.user_id(await api.sign_up(EMAIL))
    token = api.oauth.token(email=EMAIL, scope="documents:generate analytics:view", alg=alg)

    # when
    result = await api.gql(VIEWER, token=token)

    # then
    assert result.ok()["viewer"] == {
        "kind": "OAUTH",
        "scopes": ["GENERATE_DOCUMENTS", "VIEW_ANALYTICS"],
        "user": {"id": user_id, "email": EMAIL},
        "apiKey": None,
        "environment": None,
    }


async def test_every_oauth_scope_maps_to_a_keyplane_scope(api: Api) -> None:
    # given
    await api.sign_up(EMAIL)
    token = api.oauth.token(email=EMAIL, scope=ALL_OAUTH_SCOPES + " openid profile")

    # when
    result = await api.gql(VIEWER, token=token)

    # then
    assert result.ok()["viewer"]["scopes"] == [
        "GENERATE_DOCUMENTS",
        "MANAGE_PROJECT",
        "MANAGE_TEMPLATES",
        "VIEW_ANALYTICS",
    ]


async def test_the_email_claim_matches_in_any_case(api: Api) -> None:
    # given
    user_id = await api.user_id(await api.sign_up(EMAIL))
    token = api.oauth.token(email="Ada@Example.COM")

    # when
    result = await api.gql(VIEWER, token=token)

    # then
    assert result.ok()["viewer"]["user"] == {"id": user_id, "email": EMAIL}


async def test_a_linked_identity_is_remembered_without_an_email_claim(api: Api) -> None:
    # given
    user_id = await api.user_id(await api.sign_up(EMAIL))
    (await api.gql(VIEWER, token=api.oauth.token(sub="ext-42", email=EMAIL))).ok()

    # when
    result = await api.gql(VIEWER, token=api.oauth.token(sub="ext-42", alg="ES256"))

    # then
    assert result.ok()["viewer"]["user"] == {"id": user_id, "email": EMAIL}
    links = await OAuthIdentity.all().values("issuer", "subject", "user_id")
    assert links == [{"issuer": api.oauth.issuer, "subject": "ext-42", "user_id": user_id}]


async def test_a_linked_identity_wins_over_a_later_email_claim(api: Api) -> None:
    # given
    ada_id = await api.user_id(await api.sign_up(EMAIL))
    await api.sign_up("grace@example.com")
    (await api.gql(VIEWER, token=api.oauth.token(sub="ext-42", email=EMAIL))).ok()

    # when
    token = api.oauth.token(sub="ext-42", email="grace@example.com")
    result = await api.gql(VIEWER, token=token)

    # then
    assert result.ok()["viewer"]["user"] == {"id": ada_id, "email": EMAIL}


# Tokens that name nobody we know


async def test_an_unverified_email_is_refused_and_not_linked(api: Api) -> None:
    # given
    await api.sign_up(EMAIL)
    token = api.oauth.token(sub="ext-42", email=EMAIL, email_verified=False)

    # when
    result = await api.gql(VIEWER, token=token)

    # then
    assert_refused(result)
    assert await OAuthIdentity.all().count() == 0
    assert_refused(await api.gql(VIEWER, token=api.oauth.token(sub="ext-42")))


async def test_an_email_verified_claim_must_be_the_boolean_true(api: Api) -> None:
    # given
    await api.sign_up(EMAIL)
    token = api.oauth.token(email=EMAIL, email_verified="true")  # type: ignore[arg-type]

    # when
    result = await api.gql(VIEWER, token=token)

    # then
    assert_refused(result)


@pytest.mark.parametrize(
    "email", ["nobody@example.com", None], ids=["unknown-email", "no-email-claim"]
)
async def test_a_token_for_an_unknown_user_is_refused(api: Api, email: str | None) -> None:
    # given
    await api.sign_up(EMAIL)

    # when
    result = await api.gql(VIEWER, token=api.oauth.token(email=email))

    # then
    assert_refused(result)


# Invalid tokens


@pytest.mark.parametrize("make_token", INVALID_TOKENS.values(), ids=INVALID_TOKENS.keys())
async def test_an_invalid_token_is_refused_with_the_one_401(
    api: Api, make_token: Callable[[OAuthIssuer], str]
) -> None:
    # given
    await api.sign_up(EMAIL)
    (await api.gql(VIEWER, token=api.oauth.token(email=EMAIL))).ok()

    # when
    result = await api.gql(VIEWER, token=make_token(api.oauth))

    # then
    assert_refused(result)


async def test_a_token_within_the_clock_leeway_is_accepted(api: Api) -> None:
    # given
    await api.sign_up(EMAIL)
    token = api.oauth.token(email=EMAIL, nbf=int(time.time()) + 5)

    # when
    result = await api.gql(VIEWER, token=token)

    # then
    assert result.ok()["viewer"]["kind"] == "OAUTH"


# Effective scopes: the token's scopes intersected with the user's role


async def test_an_owner_token_with_only_analytics_view_reads_keys_but_cannot_create_them(
    api: Api,
) -> None:
    # given
    dashboard, _, environment_id = await sign_up_with_project(api)
    key_id, _ = await api.create_key(dashboard, environment_id, ["GENERATE_DOCUMENTS"])
    token = api.oauth.token(email=EMAIL, scope="analytics:view")
    key_input = {"environmentId": environment_id, "name": "ci", "scopes": ["VIEW_ANALYTICS"]}

    # when
    created = await api.gql(CREATE_API_KEY, {"input": key_input}, token=token)
    listed = await api.gql(ENVIRONMENT_KEYS, {"id": environment_id}, token=token)
    read = await api.gql(API_KEY, {"id": key_id}, token=token)

    # then
    assert created.data == {"createApiKey": None}
    assert created.codes == ["FORBIDDEN"]
    assert listed.ok() == {
        "environment": {
            "id": environment_id,
            "apiKeys": {"edges": [{"node": {"id": key_id, "name": "server"}}]},
        }
    }
    assert read.ok() == {"apiKey": {"id": key_id, "name": "server"}}


async def test_an_owner_token_creates_keys_only_within_its_token_scopes(api: Api) -> None:
    # given
    _, _, environment_id = await sign_up_with_project(api)
    token = api.oauth.token(email=EMAIL, scope="project:manage analytics:view")

    def key_input(*scopes: str) -> dict[str, Any]:
        return {"input": {"environmentId": environment_id, "name": "ci", "scopes": list(scopes)}}

    # when
    within = await api.gql(CREATE_API_KEY, key_input("VIEW_ANALYTICS"), token=token)
    beyond = await api.gql(CREATE_API_KEY, key_input("GENERATE_DOCUMENTS"), token=token)

    # then
    assert within.ok() == {
        "createApiKey": {
            "apiKey": {"name": "ci", "scopes": ["VIEW_ANALYTICS"], "createdBy": {"email": EMAIL}}
        }
    }
    assert beyond.data == {"createApiKey": None}
    assert beyond.codes == ["FORBIDDEN"]


async def test_a_viewer_members_full_token_is_narrowed_to_the_viewer_role(api: Api) -> None:
    # given
    owner, project_id, environment_id = await sign_up_with_project(api)
    key_id, _ = await api.create_key(owner, environment_id, ["VIEW_ANALYTICS"])
    viewer_id = await api.user_id(await api.sign_up("vic@example.com"))
    await Member.create(project_id=project_id, user_id=viewer_id, role=Role.VIEWER)
    token = api.oauth.token(email="vic@example.com", scope=ALL_OAUTH_SCOPES)
    key_input = {"environmentId": environment_id, "name": "ci", "scopes": ["VIEW_ANALYTICS"]}

    # when
    created = await api.gql(CREATE_API_KEY, {"input": key_input}, token=token)
    read = await api.gql(API_KEY, {"id": key_id}, token=token)

    # then
    assert created.data == {"createApiKey": None}
    assert created.codes == ["FORBIDDEN"]
    assert read.ok() == {"apiKey": {"id": key_id, "name": "server"}}


async def test_a_token_sharing_no_scope_with_the_role_cannot_read_keys(api: Api) -> None:
    # given
    owner, project_id, environment_id = await sign_up_with_project(api)
    key_id, _ = await api.create_key(owner, environment_id, ["VIEW_ANALYTICS"])
    developer_id = await api.user_id(await api.sign_up("dev@example.com"))
    await Member.create(project_id=project_id, user_id=developer_id, role=Role.DEVELOPER)
    token = api.oauth.token(email="dev@example.com", scope="project:manage")

    # when
    read = await api.gql(API_KEY, {"id": key_id}, token=token)

    # then
    assert read.data == {"apiKey": None}
    assert read.codes == ["FORBIDDEN"]


async def test_an_oauth_token_of_a_non_member_sees_nothing_of_the_project(api: Api) -> None:
    # given
    owner, _, environment_id = await sign_up_with_project(api)
    key_id, _ = await api.create_key(owner, environment_id, ["VIEW_ANALYTICS"])
    await api.sign_up("eve@example.com")
    token = api.oauth.token(email="eve@example.com", scope=ALL_OAUTH_SCOPES)

    # when
    read = await api.gql(API_KEY, {"id": key_id}, token=token)
    listed = await api.gql(ENVIRONMENT_KEYS, {"id": environment_id}, token=token)

    # then
    assert (read.data, read.codes) == ({"apiKey": None}, ["NOT_FOUND"])
    assert (listed.data, listed.codes) == ({"environment": None}, ["NOT_FOUND"])


# Without an issuer


class TestWithoutAnIssuer:
    """With no KEYPLANE_OAUTH_* settings keyplane is no resource server at all."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, oauth=None)

    @pytest.mark.parametrize("alg", ["RS256", "ES256"])
    async def test_oauth_tokens_are_refused(self, api: Api, alg: str) -> None:
        # given
        await api.sign_up(EMAIL)
        token = api.oauth.token(email=EMAIL, alg=alg)

        # when
        result = await api.gql(VIEWER, token=token)

        # then
        assert_refused(result)

    async def test_dashboard_tokens_still_work(self, api: Api) -> None:
        # given
        token = await api.sign_up(EMAIL)

        # when
        result = await api.gql(VIEWER, token=token)

        # then
        assert result.ok()["viewer"]["kind"] == "JWT"
