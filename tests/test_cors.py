"""CORS: browser pages on the origins KEYPLANE_CORS_ORIGINS lists may call the API and read its
rate-limit headers; other origins get no CORS header; with none listed there are none at all."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest

from keyplane.auth.api_key import generate_secret
from keyplane.body_limit import MAX_BODY_BYTES
from keyplane.settings import RunMode, Settings, SettingsError
from tests.helpers import Api

ORIGIN = "https://app.example.com"
SECOND_ORIGIN = "http://localhost:5173"
UNLISTED_ORIGIN = "https://elsewhere.example.org"
VIEWER = {"query": "{ viewer { kind } }"}
RATE_LIMIT_HEADERS = ("x-ratelimit-", "ratelimit")


def preflight(origin: str, headers: str = "authorization, content-type") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": headers,
    }


def exposed(response: httpx.Response) -> set[str]:
    value = response.headers.get("access-control-expose-headers", "")
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def varies_on_origin(response: httpx.Response) -> bool:
    varies = ",".join(response.headers.get_list("vary"))
    return "origin" in {name.strip().lower() for name in varies.split(",")}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, cors_origins=(ORIGIN, SECOND_ORIGIN))


# --- the setting ----------------------------------------------------------------------------


def _environ(origins: str) -> dict[str, str]:
    return {
        "KEYPLANE_ENV": "development",
        "KEYPLANE_JWT_SECRET": "cors-tests-" + "x" * 40,
        "KEYPLANE_CORS_ORIGINS": origins,
    }


def test_the_origins_are_read_as_a_comma_separated_list() -> None:
    # when
    settings = Settings.from_environ(_environ(f" {ORIGIN} ,{SECOND_ORIGIN},,"))

    # then
    assert settings.cors_origins == (ORIGIN, SECOND_ORIGIN)


def test_no_origins_is_the_default() -> None:
    # when
    settings = Settings.from_environ(_environ(""))

    # then
    assert settings.cors_origins == ()


def test_a_star_is_a_settings_error_that_says_to_list_the_origins() -> None:
    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(_environ(f"{ORIGIN},*"))

    # then
    assert refused.value.problems == [
        "KEYPLANE_CORS_ORIGINS may not be '*': list each origin that may call the API from a "
        "browser, such as https://app.example.com"
    ]


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        ("app.example.com", "the scheme must be http or https"),
        ("null", "the scheme must be http or https"),
        ("ftp://app.example.com", "the scheme must be http or https"),
        ("https://app.example.com/", "it may not have a path, not even a trailing slash"),
        ("https://app.example.com/app", "it may not have a path, not even a trailing slash"),
        ("https://App.example.com", "browsers send it in lower case"),
        ("https://app.example.com:443", "browsers leave out the default port 443"),
        ("https://app.example.com:99999", "it does not parse as scheme://host:port"),
        ("https://user@app.example.com", "it may not hold a user name"),
        ("https://", "it needs a host, and a port when it has a colon"),
    ],
)
def test_a_value_that_is_not_an_origin_is_a_settings_error_saying_why(
    origin: str, why: str
) -> None:
    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(_environ(f"{ORIGIN},{origin}"))

    # then
    assert refused.value.problems == [
        f"KEYPLANE_CORS_ORIGINS: {origin!r} is not an origin ({why}); write it as "
        "scheme://host or scheme://host:port, such as https://app.example.com"
    ]


# --- preflights -----------------------------------------------------------------------------


@pytest.mark.parametrize("origin", [ORIGIN, SECOND_ORIGIN])
async def test_a_preflight_from_a_listed_origin_is_allowed(api: Api, origin: str) -> None:
    # when
    response = await api.client.options(
        "/graphql", headers=preflight(origin, "authorization, content-type, x-request-id")
    )

    # then
    assert response.status_code in (200, 204)
    headers = response.headers
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-methods"] == "POST, GET"
    allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "x-request-id"} <= allowed
    assert int(headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in headers
    assert varies_on_origin(response)


async def test_a_preflight_from_an_unlisted_origin_gets_no_allow_origin(api: Api) -> None:
    # when
    response = await api.client.options("/graphql", headers=preflight(UNLISTED_ORIGIN))

    # then
    assert "access-control-allow-origin" not in response.headers


async def test_a_preflight_asking_for_a_header_the_app_does_not_read_is_refused(
    api: Api,
) -> None:
    # when
    response = await api.client.options(
        "/graphql", headers=preflight(ORIGIN, "authorization, x-debug")
    )

    # then
    assert response.status_code == 400


async def test_preflights_are_never_charged_to_a_rate_limit_bucket(api: Api) -> None:
    # given
    before = await api.client.post("/graphql", json=VIEWER)

    # when
    for _ in range(3):
        answered = await api.client.options("/graphql", headers=preflight(ORIGIN))
        assert answered.status_code == 200
    after = await api.client.post("/graphql", json=VIEWER)

    # then: one unit less than before, for `after` itself
    assert int(after.headers["x-ratelimit-remaining"]) == (
        int(before.headers["x-ratelimit-remaining"]) - 1
    )


class TestInProduction:
    """Production refuses every method but POST before authenticating: not a preflight."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, mode=RunMode.PRODUCTION)

    async def test_a_preflight_is_allowed(self, api: Api) -> None:
        # when
        response = await api.client.options("/graphql", headers=preflight(ORIGIN))

        # then
        assert (response.status_code, response.headers["access-control-allow-origin"]) == (
            200,
            ORIGIN,
        )

    async def test_a_post_from_a_listed_origin_is_answered_with_cors_headers(
        self, api: Api
    ) -> None:
        # when
        response = await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})

        # then
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == ORIGIN

    async def test_a_get_from_a_listed_origin_is_still_refused_but_readable(self, api: Api) -> None:
        # when
        response = await api.client.get(
            "/graphql", params=VIEWER, headers={"Origin": ORIGIN, "Accept": "application/json"}
        )

        # then
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        assert response.headers["access-control-allow-origin"] == ORIGIN


# --- real requests --------------------------------------------------------------------------


async def test_an_answer_to_a_listed_origin_echoes_it_and_exposes_the_rate_limit_headers(
    api: Api,
) -> None:
    # when
    response = await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})

    # then
    assert response.status_code == 200
    assert response.json()["data"] == {"viewer": {"kind": "ANONYMOUS"}}
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert varies_on_origin(response)
    sent = {name for name in response.headers if name.startswith(RATE_LIMIT_HEADERS)}
    assert sent == {
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "ratelimit",
        "ratelimit-policy",
    }
    assert exposed(response) == sent | {"retry-after", "x-request-id"}
    assert "access-control-allow-credentials" not in response.headers


async def test_the_exposed_headers_are_spelled_as_the_readme_spells_them(api: Api) -> None:
    # when
    response = await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})

    # then: a client that compares the names as written (case and all) finds each one
    listed = [name.strip() for name in response.headers["access-control-expose-headers"].split(",")]
    assert listed == [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
        "X-Request-Id",
    ]


async def test_an_unlisted_origin_is_answered_without_allow_origin(api: Api) -> None:
    # when
    response = await api.client.post("/graphql", json=VIEWER, headers={"Origin": UNLISTED_ORIGIN})

    # then: answered (the browser, not the server, keeps it from the page)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert varies_on_origin(response)  # a cache must not hand it to a listed origin


async def test_a_refused_credential_401_is_readable_by_a_listed_origin(api: Api) -> None:
    # when
    response = await api.client.post(
        "/graphql",
        json=VIEWER,
        headers={"Origin": ORIGIN, "Authorization": f"Bearer {generate_secret()}"},
    )

    # then
    assert response.status_code == 401
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "x-ratelimit-remaining" in exposed(response)


async def test_a_413_is_readable_by_a_listed_origin(api: Api) -> None:
    # when
    response = await api.client.post(
        "/graphql",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"Origin": ORIGIN, "Content-Type": "application/json"},
    )

    # then
    assert response.status_code == 413
    assert response.headers["access-control-allow-origin"] == ORIGIN


class TestWhenRateLimited:
    @pytest.fixture
    def rate_limits(self) -> str:
        return "api_key=100/minute;oauth=100/minute;jwt=100/minute;anonymous=1/minute"

    async def test_a_429_lets_a_listed_origin_read_its_retry_after(self, api: Api) -> None:
        # given
        await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})

        # when
        response = await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})

        # then
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) >= 1
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert {"retry-after", "x-ratelimit-remaining"} <= exposed(response)

    async def test_preflights_are_answered_with_the_bucket_empty(self, api: Api) -> None:
        # given
        await api.client.post("/graphql", json=VIEWER)

        # when
        response = await api.client.options("/graphql", headers=preflight(ORIGIN))

        # then
        assert (response.status_code, response.headers["access-control-allow-origin"]) == (
            200,
            ORIGIN,
        )


class TestWhenBusy:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, max_in_flight=1)

    async def test_a_busy_503_is_readable_by_a_listed_origin_and_preflights_still_pass(
        self, api: Api
    ) -> None:
        # given: one request in flight, its body not yet sent
        release = asyncio.Event()

        async def held_body() -> AsyncIterator[bytes]:
            await release.wait()
            yield b'{"query": "{ viewer { kind } }"}'

        held = asyncio.create_task(
            api.client.post(
                "/graphql", content=held_body(), headers={"Content-Type": "application/json"}
            )
        )
        await asyncio.sleep(0.05)

        # when
        busy = await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})
        preflighted = await api.client.options("/graphql", headers=preflight(ORIGIN))
        release.set()
        finished = await held

        # then
        assert (busy.status_code, busy.headers["retry-after"]) == (503, "1")
        assert busy.headers["access-control-allow-origin"] == ORIGIN
        assert "retry-after" in exposed(busy)
        assert preflighted.status_code == 200
        assert finished.status_code == 200


# --- no origins listed ----------------------------------------------------------------------


class TestWithNoOrigins:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, cors_origins=())

    async def test_answers_carry_no_cors_header_at_all(self, api: Api) -> None:
        # when
        answered = await api.client.post("/graphql", json=VIEWER, headers={"Origin": ORIGIN})
        preflighted = await api.client.options("/graphql", headers=preflight(ORIGIN))

        # then
        assert answered.status_code == 200
        assert preflighted.status_code == 405  # OPTIONS is no method of /graphql
        for response in (answered, preflighted):
            assert [h for h in response.headers if h.startswith("access-control-")] == []
            assert not varies_on_origin(response)
