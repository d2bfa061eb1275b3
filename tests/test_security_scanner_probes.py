"""The probes GraphQL security scanners (graphql-cop and its kind) send, against the production
profile: each gets the hardened answer. The documents are the scanners' own."""

from __future__ import annotations

import dataclasses

import pytest

from keyplane.settings import RunMode, Settings
from tests.helpers import Api


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, mode=RunMode.PRODUCTION)


ALIAS_OVERLOADING = "query cop { " + " ".join(f"alias{i}:__typename" for i in range(101)) + " }"
DIRECTIVE_OVERLOADING = "query cop { __typename " + "@aa" * 10 + " }"
KNOWN_DIRECTIVE_DUPLICATED = "query cop { __typename " + "@include(if: true)" * 10 + " }"
FIELD_SUGGESTIONS = "query cop { __schema { directive } }"
PLAIN_FIELD_SUGGESTIONS = "query cop { viewr { kind } }"
INTROSPECTION = "query cop { __schema { types { name fields { name } } } }"
CIRCULAR_INTROSPECTION = (
    "query cop { __schema { types { fields { type { fields { type { fields { type { fields "
    "{ type { name } } } } } } } } } } }"
)
TYPENAME = "query cop { __typename }"
SIGN_UP = (
    'mutation cop { signUp(input: {email: "cop@example.com", password: "correct horse", '
    'name: "Cop"}) { accessToken } }'
)


async def post(api: Api, query: str) -> tuple[int, dict[str, object]]:
    response = await api.client.post("/graphql", json={"query": query})
    return response.status_code, response.json()


async def test_alias_overloading_with_101_aliases_is_refused(api: Api) -> None:
    # when
    status, body = await post(api, ALIAS_OVERLOADING)

    # then
    assert (status, body["data"]) == (200, None)
    assert [e["extensions"]["code"] for e in body["errors"]] == ["QUERY_TOO_COMPLEX"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("query", [DIRECTIVE_OVERLOADING, KNOWN_DIRECTIVE_DUPLICATED])
async def test_ten_duplicated_directives_get_a_few_errors_not_one_per_directive(
    api: Api, query: str
) -> None:
    # when
    status, body = await post(api, query)

    # then: graphql-cop flags a server that reports all ten
    errors = body["errors"]
    assert (status, body["data"]) == (200, None)
    assert isinstance(errors, list)
    assert 1 <= len(errors) <= 6


@pytest.mark.parametrize("query", [INTROSPECTION, FIELD_SUGGESTIONS])
async def test_introspection_is_closed_to_anonymous_callers(api: Api, query: str) -> None:
    # when
    status, body = await post(api, query)

    # then
    assert (status, body["data"]) == (200, None)
    assert body["errors"] == [
        {
            "message": "Introspection is open to dashboard sessions only.",
            "extensions": {"code": "FORBIDDEN", "requiredScopes": []},
        }
    ]


async def test_circular_introspection_is_refused_before_it_runs(api: Api) -> None:
    # when
    status, body = await post(api, CIRCULAR_INTROSPECTION)

    # then: its cost alone (about 222,000 objects) refuses it, before introspection is asked
    assert (status, body["data"]) == (200, None)
    assert body["errors"] == [
        {
            "message": "The operation costs 222211, more than the maximum of 25000: ask for "
            "fewer or smaller pages or shorter series.",
            "extensions": {"code": "QUERY_TOO_COMPLEX"},
        }
    ]


async def test_no_field_suggestion_is_offered(api: Api) -> None:
    # when
    _, body = await post(api, PLAIN_FIELD_SUGGESTIONS)

    # then
    assert "Did you mean" not in str(body)
    assert body["errors"] == [
        {
            "message": "Cannot query field 'viewr' on type 'Query'.",
            "locations": [{"line": 1, "column": 13}],
            "extensions": {"code": "BAD_USER_INPUT", "field": "query"},
        }
    ]


@pytest.mark.parametrize("query", [TYPENAME, SIGN_UP])
async def test_get_queries_and_get_mutations_are_405_and_run_nothing(api: Api, query: str) -> None:
    # when
    response = await api.client.get("/graphql", params={"query": query})
    after = await api.client.post(
        "/graphql",
        json={
            "query": 'mutation { logIn(input: {email: "cop@example.com", password: "x"}) '
            "{ accessToken } }"
        },
    )

    # then
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    assert after.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"  # nobody signed up


async def test_a_url_encoded_post_is_415_and_runs_nothing(api: Api) -> None:
    # when
    response = await api.client.post("/graphql", data={"query": SIGN_UP})

    # then
    assert response.status_code == 415
    assert response.json()["errors"][0]["extensions"]["code"] == "UNSUPPORTED_MEDIA_TYPE"


async def test_there_is_no_graphiql_page(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", headers={"Accept": "text/html"})

    # then
    assert response.status_code == 405
    assert "graphiql" not in response.text.lower()


async def test_no_answer_carries_a_trace(api: Api) -> None:
    # when
    _, body = await post(api, TYPENAME)

    # then
    assert body == {
        "data": {"__typename": "Query"},
        "extensions": {"cost": {"requested": 0, "maximum": 25000}},
    }


@pytest.mark.parametrize(
    "query", ["query cop { __typenam }", "query cop {", "{ viewer(x: 1) { kind } }", "}{"]
)
async def test_malformed_documents_get_coded_errors_without_a_trace(api: Api, query: str) -> None:
    # when
    status, body = await post(api, query)

    # then
    assert status == 200
    assert body["data"] is None
    errors = body["errors"]
    assert isinstance(errors, list)
    assert {e["extensions"]["code"] for e in errors} == {"BAD_USER_INPUT"}
    text = str(body).lower()
    assert "traceback" not in text
    assert "exception" not in text


async def test_array_batching_stays_on_bounded_to_25_and_charged_per_operation(api: Api) -> None:
    # when
    batch = await api.client.post("/graphql", json=[{"query": TYPENAME}] * 25)
    after = await api.client.post("/graphql", json={"query": TYPENAME})
    too_many = await api.client.post("/graphql", json=[{"query": TYPENAME}] * 26)

    # then
    assert batch.status_code == 200
    assert len(batch.json()) == 25
    assert (
        int(batch.headers["X-RateLimit-Remaining"]) - int(after.headers["X-RateLimit-Remaining"])
        == 1
    )
    assert (
        int(after.headers["X-RateLimit-Limit"]) - int(after.headers["X-RateLimit-Remaining"]) == 26
    )
    assert too_many.status_code == 400
