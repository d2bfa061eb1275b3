"""The HTTP edge: refused credentials, anonymous callers, GraphiQL, health, and error masking."""

from __future__ import annotations

import base64
import dataclasses
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import graphql
import httpx
import pytest

from keyplane.auth.api_key import generate_secret
from keyplane.models.base import BASE62
from keyplane.resolvers import project as project_resolvers
from keyplane.settings import RunMode, Settings
from tests.helpers import Api, Clock, cost

VIEWER = "{ viewer { kind scopes user { id } apiKey { id } environment { id } } }"
PROJECTS = "{ projects { id } }"
REVOKE_API_KEY = "mutation Revoke($id: ID!) { revokeApiKey(id: $id) { id status } }"
SIGN_UP_INLINE = """
mutation { signUp(input: {email: "get@example.com", password: "correct horse", name: "Get"}) {
  accessToken
} }
"""
SIGN_UP = """
mutation SignUp($input: SignUpInput!) { signUp(input: $input) { user { email } } }
"""

REFUSED_BODY = {
    "data": None,
    "errors": [
        {"message": "Invalid or expired credentials.", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}
REFUSED_HEADER = 'Bearer error="invalid_token"'


@dataclass(frozen=True)
class Keys:
    """A dashboard token and three keys of one environment: live, revoked and expired."""

    dashboard: str
    live: str
    revoked: str
    expired: str


def with_last_char_changed(secret: str) -> str:
    last = secret[-1]
    return secret[:-1] + (BASE62[(BASE62.index(last) + 1) % len(BASE62)])


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


REFUSED_AUTHORIZATIONS: dict[str, Callable[[Keys], str]] = {
    "unknown-key": lambda _: f"Bearer {generate_secret()}",
    "bad-checksum": lambda k: f"Bearer {with_last_char_changed(k.live)}",
    "too-short": lambda k: f"Bearer {k.live[:-1]}",
    "too-long": lambda k: f"Bearer {k.live}A",
    "revoked-key": lambda k: f"Bearer {k.revoked}",
    "expired-key": lambda k: f"Bearer {k.expired}",
    "garbage-token": lambda _: "Bearer not-a-token",
    "garbage-jwt-shape": lambda _: "Bearer aaaa.bbbb.cccc",
    "bearer-without-token": lambda _: "Bearer",
    "empty-header": lambda _: "",
    "key-under-basic": lambda k: f"Basic {k.live}",
    "basic-credentials": lambda _: basic("ada@example.com", "correct horse"),
    "dashboard-token-under-token-scheme": lambda k: f"Token {k.dashboard}",
}


@pytest.fixture
async def keys(api: Api, clock: Clock) -> Keys:
    dashboard = await api.sign_up("ada@example.com")
    environment_id = await api.create_environment(dashboard, await api.create_project(dashboard))
    _, live = await api.create_key(dashboard, environment_id, name="live")
    revoked_id, revoked = await api.create_key(dashboard, environment_id, name="revoked")
    (await api.gql(REVOKE_API_KEY, {"id": revoked_id}, token=dashboard)).ok()
    expires_at = (clock() + timedelta(minutes=1)).isoformat()
    _, expired = await api.create_key(dashboard, environment_id, name="old", expires_at=expires_at)
    clock.advance(120)
    return Keys(dashboard=dashboard, live=live, revoked=revoked, expired=expired)


async def post(api: Api, query: str, *, authorization: str | None = None) -> httpx.Response:
    headers = {} if authorization is None else {"Authorization": authorization}
    return await api.client.post("/graphql", json={"query": query}, headers=headers)


# Refused credentials


@pytest.mark.parametrize(
    "authorization", REFUSED_AUTHORIZATIONS.values(), ids=REFUSED_AUTHORIZATIONS.keys()
)
async def test_refused_credentials_get_one_identical_401(
    api: Api, keys: Keys, authorization: Callable[[Keys], str]
) -> None:
    # when
    response = await post(api, VIEWER, authorization=authorization(keys))

    # then
    assert (response.status_code, response.json()) == (401, REFUSED_BODY)
    assert response.headers["www-authenticate"] == REFUSED_HEADER


async def test_the_live_key_of_the_same_environment_is_accepted(api: Api, keys: Keys) -> None:
    # when
    response = await post(api, "{ viewer { kind } }", authorization=f"bearer  {keys.live} ")

    # then
    assert (response.status_code, response.json()) == (
        200,
        {"data": {"viewer": {"kind": "API_KEY"}}, "extensions": {"cost": cost(1)}},
    )


async def test_a_revoked_key_is_refused_on_the_very_next_request(api: Api) -> None:
    # given
    dashboard = await api.sign_up("ada@example.com")
    environment_id = await api.create_environment(dashboard, await api.create_project(dashboard))
    key_id, secret = await api.create_key(dashboard, environment_id)
    (await api.gql(VIEWER, token=secret)).ok()

    # when
    revoked = await api.gql(REVOKE_API_KEY, {"id": key_id}, token=secret)
    after = await api.gql(VIEWER, token=secret)

    # then
    assert revoked.ok() == {"revokeApiKey": {"id": key_id, "status": "REVOKED"}}
    assert (after.status, after.body) == (401, REFUSED_BODY)


# Anonymous callers


async def test_no_authorization_header_makes_an_anonymous_caller(api: Api) -> None:
    # when
    result = await api.gql(VIEWER)

    # then
    assert result.status == 200
    assert result.body == {
        "data": {
            "viewer": {
                "kind": "ANONYMOUS",
                "scopes": [],
                "user": None,
                "apiKey": None,
                "environment": None,
            }
        },
        "extensions": {"cost": cost(4)},
    }


async def test_an_anonymous_caller_asking_for_projects_is_unauthenticated(api: Api) -> None:
    # when
    result = await api.gql(PROJECTS)

    # then
    assert result.status == 200
    assert result.body == {
        "data": {"projects": None},
        "errors": [
            {
                "message": "Authentication required.",
                "locations": [{"line": 1, "column": 3}],
                "path": ["projects"],
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ],
        "extensions": {"cost": cost(10)},
    }


# GraphiQL, health and transport rules


async def test_graphiql_is_served_on_get_in_development(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", headers={"Accept": "text/html"})

    # then
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


class TestInProduction:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, mode=RunMode.PRODUCTION)

    async def test_graphiql_is_not_served(self, api: Api) -> None:
        # when
        response = await api.client.get("/graphql", headers={"Accept": "text/html"})

        # then: GET is not a GraphQL method in production at all
        assert response.status_code == 405
        assert "graphiql" not in response.text.lower()


async def test_healthz_answers_ok(api: Api) -> None:
    # when
    response = await api.client.get("/healthz")

    # then
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    # Other subsystems (the rate limiter...) may add their own entries next to these.
    assert {"status": "ok"}.items() <= response.json().items()


async def test_readyz_answers_ok_with_the_database_reachable(api: Api) -> None:
    # when
    response = await api.client.get("/readyz")

    # then
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert {"status": "ok", "database": "ok"}.items() <= response.json().items()


async def test_health_endpoints_ignore_credentials(api: Api) -> None:
    # when
    response = await api.client.get("/healthz", headers={"Authorization": "Bearer fm_nonsense"})

    # then
    assert (response.status_code, response.json()["status"]) == (200, "ok")


async def test_a_query_over_get_is_answered(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", params={"query": "{ viewer { kind } }"})

    # then
    assert (response.status_code, response.json()) == (
        200,
        {"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}},
    )


async def test_a_mutation_over_get_is_refused_and_has_no_effect(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", params={"query": SIGN_UP_INLINE})

    # then
    assert (response.status_code, response.headers["allow"]) == (405, "POST")
    after = await api.gql(
        SIGN_UP,
        {"input": {"email": "get@example.com", "password": "correct horse", "name": "Get"}},
    )
    assert after.ok() == {"signUp": {"user": {"email": "get@example.com"}}}


# Errors


async def test_an_unexpected_resolver_exception_is_masked_as_internal(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given
    token = await api.sign_up("ada@example.com")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("connection to db://admin:hunter2@db failed")

    monkeypatch.setattr(project_resolvers, "list_projects", broken)

    # when
    with caplog.at_level(logging.ERROR, logger="keyplane.errors"):
        response = await post(api, PROJECTS, authorization=f"Bearer {token}")

    # then
    assert (response.status_code, response.json()) == (
        200,
        {
            "data": {"projects": None},
            "errors": [
                {
                    "message": "Internal server error.",
                    "locations": [{"line": 1, "column": 3}],
                    "path": ["projects"],
                    "extensions": {
                        "code": "INTERNAL",
                        "requestId": response.headers["x-request-id"],
                    },
                }
            ],
            "extensions": {"cost": cost(10)},
        },
    )
    assert "hunter2" not in response.text
    assert "Traceback" not in response.text
    logged = [r for r in caplog.records if r.name == "keyplane.errors"]
    assert [type(r.exc_info[1]) for r in logged if r.exc_info] == [RuntimeError]


async def test_a_syntax_error_is_bad_user_input(api: Api) -> None:
    # when
    result = await api.gql("{ viewer { kind ")

    # then
    assert result.status == 200
    assert result.body == {
        "data": None,
        "errors": [
            {
                "message": "Syntax Error: Expected Name, found <EOF>.",
                "locations": [{"line": 1, "column": 17}],
                "extensions": {"code": "BAD_USER_INPUT", "field": "query"},
            }
        ],
        "extensions": {"cost": cost(0)},
    }


async def test_a_syntax_error_is_bad_user_input_every_time(api: Api) -> None:
    # when
    codes = [(await api.gql("{ viewer { kind } } }")).codes for _ in range(3)]

    # then
    assert codes == [["BAD_USER_INPUT"]] * 3


@pytest.mark.parametrize("depth", [3_000, 100_000])
async def test_a_document_nested_too_deeply_to_parse_is_a_typed_error(api: Api, depth: int) -> None:
    # when
    result = await api.gql("{ viewer " + "{ kind " * depth + "}" * (depth + 1))

    # then
    assert result.status == 200
    assert result.data is None
    assert result.codes == ["BAD_USER_INPUT"]


async def test_an_unknown_field_is_bad_user_input(api: Api) -> None:
    # when
    result = await api.gql("{ viewer { password } }")

    # then
    assert result.status == 200
    assert [e["extensions"] for e in result.errors] == [
        {"code": "BAD_USER_INPUT", "field": "query"}
    ]


async def test_a_wrongly_typed_variable_is_bad_user_input_naming_it(api: Api) -> None:
    # when
    result = await api.gql(
        "query ApiKey($id: ID!) { apiKey(id: $id) { id } }", {"id": {"not": "an id"}}
    )

    # then
    assert result.data is None
    assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT", "field": "id"}]


# viewer > apiKey > environment > (project > environments) x 5 > id: 14 levels.
TOO_DEEP = (
    "{ viewer { apiKey { environment { " + "project { environments { " * 5 + "id" + " }" * 13 + " }"
)


async def test_a_query_nested_deeper_than_ten_levels_is_refused(api: Api) -> None:
    # when
    result = await api.gql(TOO_DEEP)

    # then
    assert result.status == 200
    assert result.data is None
    assert result.codes == ["QUERY_TOO_COMPLEX"]
    assert "exceeds maximum operation depth" in result.errors[0]["message"]


def _counting_parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from keyplane.schema import query_cache

    parsed: list[str] = []
    parse = graphql.parse  # what query_cache calls, before the test replaces it

    def counted(query: str, **options: object) -> object:
        parsed.append(query)
        return parse(query, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(query_cache, "parse", counted)
    return parsed


async def test_repeated_documents_are_parsed_and_validated_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given
    query = "{ viewer { kind scopes } __typename } # " + uuid.uuid4().hex
    parsed = _counting_parses(monkeypatch)

    # when
    answers = [(await api.gql(query)).ok() for _ in range(5)]

    # then
    assert parsed == [query]
    assert answers == [{"viewer": {"kind": "ANONYMOUS", "scopes": []}, "__typename": "Query"}] * 5


async def test_a_document_longer_than_16k_characters_is_parsed_each_time_not_kept(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given
    from keyplane.schema.query_cache import MAX_KEPT_QUERY_CHARS

    query = "{ viewer { kind } } # " + "x" * MAX_KEPT_QUERY_CHARS
    parsed = _counting_parses(monkeypatch)

    # when
    answers = [(await api.gql(query)).ok() for _ in range(3)]

    # then
    assert parsed == [query] * 3
    assert answers == [{"viewer": {"kind": "ANONYMOUS"}}] * 3
