"""GraphQL over HTTP (the current draft): `application/graphql-response+json` when asked for, with
400 for request errors; `application/json` as before; mutations are never sent with GET."""

from __future__ import annotations

import dataclasses
from typing import Any

import httpx
import pytest

from keyplane.auth.api_key import generate_secret
from keyplane.settings import RunMode, Settings
from tests.helpers import Api, cost

GRAPHQL_RESPONSE = "application/graphql-response+json"
JSON = "application/json"
VIEWER = "{ viewer { kind } }"
SIGN_UP = """mutation { signUp(input: {email: "get@example.com", password: "correct horse",
  name: "Get"}) { user { email } } }"""
EMAIL_IS_FREE = "mutation($i: SignUpInput!) { signUp(input: $i) { user { email } } }"
MISSING_KEY = "query($id: ID!) { apiKey(id: $id) { id } }"


async def post(api: Api, body: Any, accept: str | None = GRAPHQL_RESPONSE) -> httpx.Response:
    headers = {} if accept is None else {"Accept": accept}
    return await api.client.post("/graphql", json=body, headers=headers)


def media_type(response: httpx.Response) -> str:
    return response.headers["content-type"].split(";")[0].strip()


def bad_query(message: str, line: int, column: int) -> dict[str, Any]:
    return {
        "message": message,
        "locations": [{"line": line, "column": column}],
        "extensions": {"code": "BAD_USER_INPUT", "field": "query"},
    }


# --- application/graphql-response+json ------------------------------------------------------


async def test_a_request_accepting_graphql_response_json_gets_it_back(api: Api) -> None:
    # when
    response = await post(api, {"query": VIEWER})

    # then
    assert (response.status_code, media_type(response), response.json()) == (
        200,
        GRAPHQL_RESPONSE,
        {"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}},
    )


REQUEST_ERRORS = [
    pytest.param(
        {"query": "{ viewer { kind "},
        [bad_query("Syntax Error: Expected Name, found <EOF>.", 1, 17)],
        0,
        id="a document that does not parse",
    ),
    pytest.param(
        {"query": "{ viewer { shoeSize } }"},
        [bad_query("Cannot query field 'shoeSize' on type 'Viewer'.", 1, 12)],
        1,
        id="a document that does not validate",
    ),
]


@pytest.mark.parametrize(("body", "errors", "requested"), REQUEST_ERRORS)
async def test_a_request_error_is_400_without_data(
    api: Api, body: dict[str, Any], errors: list[dict[str, Any]], requested: int
) -> None:
    # when
    response = await post(api, body)

    # then
    assert (response.status_code, media_type(response), response.json()) == (
        400,
        GRAPHQL_RESPONSE,
        {"errors": errors, "extensions": {"cost": cost(requested)}},
    )


async def test_variables_that_do_not_fit_are_a_request_error(api: Api) -> None:
    # when
    response = await post(api, {"query": MISSING_KEY, "variables": {"id": {"not": "an id"}}})

    # then
    assert (response.status_code, media_type(response)) == (400, GRAPHQL_RESPONSE)
    body = response.json()
    assert "data" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"]


async def test_a_body_that_is_not_json_is_400_in_the_asked_media_type(api: Api) -> None:
    # when
    response = await api.client.post(
        "/graphql",
        content=b'{"query": ',
        headers={"Accept": GRAPHQL_RESPONSE, "Content-Type": JSON},
    )

    # then
    assert (response.status_code, media_type(response)) == (400, GRAPHQL_RESPONSE)
    body = response.json()
    assert "data" not in body
    assert [e["extensions"] for e in body["errors"]] == [
        {"code": "BAD_USER_INPUT", "field": "body"}
    ]


async def test_a_refused_credential_is_401_in_the_asked_media_type(api: Api) -> None:
    # when
    response = await api.client.post(
        "/graphql",
        json={"query": VIEWER},
        headers={"Accept": GRAPHQL_RESPONSE, "Authorization": f"Bearer {generate_secret()}"},
    )

    # then: nothing ran, so no `data`
    assert (response.status_code, media_type(response)) == (401, GRAPHQL_RESPONSE)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert response.json() == {
        "errors": [
            {
                "message": "Invalid or expired credentials.",
                "extensions": {"code": "UNAUTHENTICATED"},
            }
        ]
    }


class TestOverTheLimit:
    @pytest.fixture
    def rate_limits(self) -> str:
        return "anonymous=1/minute"

    async def test_a_429_is_in_the_asked_media_type(self, api: Api) -> None:
        # given
        assert (await post(api, {"query": VIEWER})).status_code == 200

        # when
        response = await post(api, {"query": VIEWER})

        # then
        assert (response.status_code, media_type(response)) == (429, GRAPHQL_RESPONSE)
        assert "retry-after" in response.headers
        body = response.json()
        assert "data" not in body
        assert [e["extensions"]["code"] for e in body["errors"]] == ["RATE_LIMITED"]


async def test_a_field_error_is_200_with_the_data_that_was_produced(api: Api) -> None:
    # given
    token = await api.sign_up()

    # when
    response = await api.client.post(
        "/graphql",
        json={"query": MISSING_KEY, "variables": {"id": "key_" + "0" * 20}},
        headers={"Accept": GRAPHQL_RESPONSE, "Authorization": f"Bearer {token}"},
    )

    # then: execution started, so `data` is there (null where the error is)
    assert (response.status_code, media_type(response)) == (200, GRAPHQL_RESPONSE)
    body = response.json()
    assert body["data"] == {"apiKey": None}
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["apiKey"], "NOT_FOUND")
    ]


async def test_a_batch_answers_200_and_its_request_errors_have_no_data(api: Api) -> None:
    # when
    response = await post(api, [{"query": VIEWER}, {"query": "{ viewer { shoeSize } }"}])

    # then
    assert (response.status_code, media_type(response)) == (200, GRAPHQL_RESPONSE)
    first, second = response.json()
    assert first == {"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}}
    assert "data" not in second
    assert second["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, JSON),
        ("*/*", JSON),
        (JSON, JSON),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE}, {JSON}", GRAPHQL_RESPONSE),
        (f"{JSON}, {GRAPHQL_RESPONSE}", JSON),
        (f"{JSON};q=0.9, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"{GRAPHQL_RESPONSE};q=0.5, */*", JSON),
        (f"{GRAPHQL_RESPONSE};q=0, {JSON}", JSON),
        (f"text/html, {GRAPHQL_RESPONSE};charset=utf-8", GRAPHQL_RESPONSE),
    ],
)
async def test_the_media_type_is_the_one_the_accept_header_ranks_first(
    api: Api, accept: str | None, expected: str
) -> None:
    # when
    response = await post(api, {"query": VIEWER}, accept=accept)

    # then
    assert (response.status_code, media_type(response)) == (200, expected)


# --- application/json: as before -------------------------------------------------------------


@pytest.mark.parametrize(("body", "errors", "requested"), REQUEST_ERRORS)
async def test_under_application_json_a_request_error_is_200_with_null_data(
    api: Api, body: dict[str, Any], errors: list[dict[str, Any]], requested: int
) -> None:
    # when
    response = await post(api, body, accept=JSON)

    # then
    assert (response.status_code, media_type(response), response.json()) == (
        200,
        JSON,
        {"data": None, "errors": errors, "extensions": {"cost": cost(requested)}},
    )


# --- GET ------------------------------------------------------------------------------------


async def email_is_free(api: Api, email: str) -> bool:
    result = await api.gql(
        EMAIL_IS_FREE, {"i": {"email": email, "password": "correct horse", "name": "x"}}
    )
    return result.status == 200 and not result.errors


MUTATION_OVER_GET = {
    "errors": [
        {
            "message": "A mutation must be sent with POST.",
            "extensions": {"code": "METHOD_NOT_ALLOWED"},
        }
    ]
}


@pytest.mark.parametrize("accept", [JSON, GRAPHQL_RESPONSE])
async def test_a_mutation_sent_with_get_is_405_with_allow_post_and_runs_nothing(
    api: Api, accept: str
) -> None:
    # when
    response = await api.client.get(
        "/graphql", params={"query": SIGN_UP}, headers={"Accept": accept}
    )

    # then
    assert (response.status_code, response.headers["allow"], media_type(response)) == (
        405,
        "POST",
        accept,
    )
    assert response.json() == MUTATION_OVER_GET
    assert await email_is_free(api, "get@example.com")


async def test_a_query_sent_with_get_is_still_answered(api: Api) -> None:
    # when
    response = await api.client.get(
        "/graphql", params={"query": VIEWER}, headers={"Accept": GRAPHQL_RESPONSE}
    )

    # then
    assert (response.status_code, media_type(response), response.json()["data"]) == (
        200,
        GRAPHQL_RESPONSE,
        {"viewer": {"kind": "ANONYMOUS"}},
    )


class TestInProduction:
    """Production takes no GET at all: a mutation sent with one is refused the same way."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, mode=RunMode.PRODUCTION)

    async def test_a_mutation_sent_with_get_is_405_with_allow_post(self, api: Api) -> None:
        # when
        response = await api.client.get(
            "/graphql", params={"query": SIGN_UP}, headers={"Accept": JSON}
        )

        # then
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        assert [e["extensions"]["code"] for e in response.json()["errors"]] == [
            "METHOD_NOT_ALLOWED"
        ]

    async def test_a_mutation_sent_with_get_is_405_in_the_asked_media_type(self, api: Api) -> None:
        # when
        response = await api.client.get(
            "/graphql", params={"query": SIGN_UP}, headers={"Accept": GRAPHQL_RESPONSE}
        )

        # then
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        assert media_type(response) == GRAPHQL_RESPONSE
        assert "data" not in response.json()
        assert await email_is_free(api, "get@example.com")

    async def test_a_request_error_is_400_under_graphql_response_json(self, api: Api) -> None:
        # when
        response = await post(api, {"query": "{ viewer { kind "})

        # then
        assert (response.status_code, media_type(response)) == (400, GRAPHQL_RESPONSE)
        assert "data" not in response.json()
