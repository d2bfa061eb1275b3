"""The production profile: the default, its secrets, its transport, /metrics, request ids, and
logs that hold no secret."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import io
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.datastructures import Secret

from keyplane.auth.api_key import generate_secret
from keyplane.auth.invitation import generate_token
from keyplane.body_limit import MAX_BODY_BYTES
from keyplane.redaction import RedactSecrets
from keyplane.resolvers import project as project_resolvers
from keyplane.settings import JWT_SECRET_FILE, RunMode, Settings, SettingsError, SignupPolicy
from tests.helpers import Api, cost
from tests.serve_process import free_port, wait_ready

# Made here, the same in every test process (pytest-xdist compares parameter ids), so that the
# repository holds no secret-looking literal (.ci/secrets scans it).
METRICS_TOKEN = hashlib.sha256(b"keyplane tests: metrics token").hexdigest()[:32]
JWT_SECRET = hashlib.sha256(b"keyplane tests: jwt secret").hexdigest()[:32]
VIEWER = "{ viewer { kind } }"
PASSWORD = "hunter2hunter2"
SIGN_UP = """mutation { signUp(input: {email: "form@example.com", password: "correct horse",
name: "Form"}) { accessToken } }"""
SIGN_UP_AGAIN = """mutation($input: SignUpInput!) { signUp(input: $input) { user { email } } }"""
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
PLACEHOLDER_ADVICE = (
    "use a random value, such as the output of "
    "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`"
)


@pytest.fixture
def mode() -> RunMode:
    return RunMode.PRODUCTION


@pytest.fixture
def metrics_token() -> str | None:
    return METRICS_TOKEN


@pytest.fixture
def settings(settings: Settings, mode: RunMode, metrics_token: str | None) -> Settings:
    token = None if metrics_token is None else Secret(metrics_token)
    return dataclasses.replace(settings, mode=mode, metrics_token=token)


development = pytest.mark.parametrize("mode", [RunMode.DEVELOPMENT])


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"errors": [{"message": message, "extensions": {"code": code}}]}


METHOD_NOT_ALLOWED = error_body("METHOD_NOT_ALLOWED", "GraphQL requests must be sent with POST.")
UNSUPPORTED_MEDIA_TYPE = error_body(
    "UNSUPPORTED_MEDIA_TYPE", "GraphQL requests must have the Content-Type application/json."
)


async def email_is_free(api: Api, email: str) -> bool:
    """Whether signing up with this email still works (then nothing had signed it up before)."""
    result = await api.gql(
        SIGN_UP_AGAIN, {"input": {"email": email, "password": "correct horse", "name": "Again"}}
    )
    free: bool = result.data == {"signUp": {"user": {"email": email}}}
    return free


# Settings: production is the default, and it wants a real secret


def test_without_keyplane_env_the_settings_are_production(tmp_path: Path) -> None:
    # when
    settings = Settings.from_environ(
        {"KEYPLANE_DATA_DIR": str(tmp_path), "KEYPLANE_JWT_SECRET": JWT_SECRET}
    )

    # then: and nothing else changes: open sign-up, SQLite in the data dir, no metrics token
    assert (
        settings.mode,
        settings.signup,
        settings.database_url,
        str(settings.jwt_secret),
        settings.metrics_token,
    ) == (
        RunMode.PRODUCTION,
        SignupPolicy.OPEN,
        f"sqlite://{tmp_path / 'keyplane.sqlite3'}",
        JWT_SECRET,
        None,
    )


def test_production_refuses_to_start_without_a_secret_and_creates_none(tmp_path: Path) -> None:
    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({"KEYPLANE_DATA_DIR": str(tmp_path)})

    # then
    assert refused.value.problems == [
        "KEYPLANE_JWT_SECRET is not set: production needs a random secret of at least 32 bytes "
        "(or KEYPLANE_ENV=development)"
    ]
    assert not (tmp_path / JWT_SECRET_FILE).exists()


def test_production_lists_every_problem_of_short_and_placeholder_secrets(tmp_path: Path) -> None:
    # given
    environ = {
        "KEYPLANE_DATA_DIR": str(tmp_path),
        "KEYPLANE_JWT_SECRET": "changeme",
        "KEYPLANE_METRICS_TOKEN": "x" * 40,
        "KEYPLANE_JWT_TTL_SECONDS": "0",
    }

    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(environ)

    # then
    assert refused.value.problems == [
        "KEYPLANE_JWT_TTL_SECONDS must be a whole number from 60 to 86400 (got '0')",
        "KEYPLANE_JWT_SECRET must be at least 32 bytes",
        f"KEYPLANE_JWT_SECRET looks like a placeholder (it holds 'changeme'): {PLACEHOLDER_ADVICE}",
        "KEYPLANE_JWT_SECRET is made of only 7 distinct characters (a random secret has many more)",
        "KEYPLANE_METRICS_TOKEN is made of only 1 distinct character "
        "(a random secret has many more)",
    ]


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("replace-me-with-a-long-random-value-0123", "it holds 'replaceme'"),
        ("Your-Secret-Goes-Here-And-Is-Long-Enough", "it holds 'yoursecret'"),
        ("<your jwt secret, 32 bytes or longer please>", "it holds '<your jwt secret"),
        ("...".ljust(40, "0") + "abcdefgh", "it holds '...'"),
        ("an example value copied from the docs, long", "it holds 'example'"),
    ],
)
def test_production_refuses_a_placeholder_secret_of_any_length(
    tmp_path: Path, secret: str, problem: str
) -> None:
    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({"KEYPLANE_DATA_DIR": str(tmp_path), "KEYPLANE_JWT_SECRET": secret})

    # then
    [only] = refused.value.problems
    assert only.startswith(f"KEYPLANE_JWT_SECRET looks like a placeholder ({problem}")


@pytest.mark.parametrize("secret", ["s" * 40, "ab" * 20, "0123456" * 6])
def test_production_refuses_a_secret_of_too_few_distinct_characters(
    tmp_path: Path, secret: str
) -> None:
    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({"KEYPLANE_DATA_DIR": str(tmp_path), "KEYPLANE_JWT_SECRET": secret})

    # then
    distinct = len(set(secret))
    plural = "" if distinct == 1 else "s"
    assert refused.value.problems == [
        f"KEYPLANE_JWT_SECRET is made of only {distinct} distinct character{plural} "
        "(a random secret has many more)"
    ]


def test_development_accepts_placeholders_and_creates_a_missing_secret(tmp_path: Path) -> None:
    # when
    memorable = Settings.from_environ(
        {
            "KEYPLANE_ENV": "development",
            "KEYPLANE_DATA_DIR": str(tmp_path / "a"),
            "KEYPLANE_JWT_SECRET": "changeme-changeme-changeme-changeme",
            "KEYPLANE_METRICS_TOKEN": "x" * 40,
        }
    )
    generated = Settings.from_environ(
        {"KEYPLANE_ENV": "development", "KEYPLANE_DATA_DIR": str(tmp_path / "b")}
    )

    # then
    assert (memorable.mode, str(memorable.jwt_secret)) == (
        RunMode.DEVELOPMENT,
        "changeme-changeme-changeme-changeme",
    )
    assert str(generated.jwt_secret) == (tmp_path / "b" / JWT_SECRET_FILE).read_text()


@pytest.mark.slow
def test_keyplane_serve_refuses_a_placeholder_secret_with_exit_code_2(tmp_path: Path) -> None:
    # when
    completed = subprocess.run(
        [sys.executable, "-m", "keyplane", "serve", "--port", "1"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")},
            "KEYPLANE_DATA_DIR": str(tmp_path),
            "KEYPLANE_JWT_SECRET": "...",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    # then
    assert completed.returncode == 2
    assert completed.stderr == (
        "keyplane: invalid settings:\n"
        "  - KEYPLANE_JWT_SECRET must be at least 32 bytes\n"
        f"  - KEYPLANE_JWT_SECRET looks like a placeholder (it holds '...'): {PLACEHOLDER_ADVICE}\n"
        "  - KEYPLANE_JWT_SECRET is made of only 1 distinct character "
        "(a random secret has many more)\n"
    )


# Transport: POST with a JSON body, nothing else, in production


async def test_a_get_query_is_refused_with_405_and_allow_post(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", params={"query": VIEWER})

    # then
    assert (response.status_code, response.headers["allow"], response.json()) == (
        405,
        "POST",
        METHOD_NOT_ALLOWED,
    )


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH"])
async def test_other_methods_are_refused_with_405_too(api: Api, method: str) -> None:
    # when
    response = await api.client.request(method, "/graphql", json={"query": VIEWER})

    # then
    assert (response.status_code, response.headers["allow"], response.json()) == (
        405,
        "POST",
        METHOD_NOT_ALLOWED,
    )


async def test_a_get_mutation_is_refused_and_runs_nothing(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", params={"query": SIGN_UP})

    # then
    assert (response.status_code, response.json()) == (405, METHOD_NOT_ALLOWED)
    assert await email_is_free(api, "form@example.com")


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"query": SIGN_UP}},  # application/x-www-form-urlencoded
        {"content": SIGN_UP, "headers": {"Content-Type": "text/plain"}},
        {"content": json.dumps({"query": SIGN_UP}), "headers": {"Content-Type": "text/plain"}},
        {"files": {"query": (None, SIGN_UP)}},  # multipart/form-data
        {"content": b'{"query": "{ viewer { kind } }"}'},  # no Content-Type at all
    ],
)
async def test_a_post_that_is_not_json_is_refused_with_415_and_runs_nothing(
    api: Api, body: dict[str, Any]
) -> None:
    # when
    response = await api.client.post("/graphql", **body)

    # then
    assert (response.status_code, response.json()) == (415, UNSUPPORTED_MEDIA_TYPE)
    assert await email_is_free(api, "form@example.com")


async def test_a_json_post_with_a_charset_is_answered(api: Api) -> None:
    # when
    response = await api.client.post(
        "/graphql",
        content=b'{"query": "{ viewer { kind } }"}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )

    # then
    assert (response.status_code, response.json()) == (
        200,
        {"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}},
    )


async def test_graphiql_is_absent_in_production(api: Api) -> None:
    # when
    response = await api.client.get("/graphql", headers={"Accept": "text/html"})

    # then
    assert (response.status_code, response.json()) == (405, METHOD_NOT_ALLOWED)


@development
async def test_graphiql_and_get_queries_stay_in_development(api: Api) -> None:
    # when
    page = await api.client.get("/graphql", headers={"Accept": "text/html"})
    query = await api.client.get("/graphql", params={"query": VIEWER})

    # then
    assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert "graphiql" in page.text.lower()
    assert (query.status_code, query.json()) == (
        200,
        {"data": {"viewer": {"kind": "ANONYMOUS"}}, "extensions": {"cost": cost(1)}},
    )


# /metrics: only to the bearer of KEYPLANE_METRICS_TOKEN in production


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token",
        f"Bearer {METRICS_TOKEN[:-1]}",
        METRICS_TOKEN,
        f"Basic {METRICS_TOKEN}",
    ],
)
async def test_metrics_without_the_right_token_is_not_found(
    api: Api, authorization: str | None
) -> None:
    # when
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await api.client.get("/metrics", headers=headers)
    unknown = await api.client.get("/no-such-path", headers=headers)

    # then: the very answer of a path that does not exist
    assert (response.status_code, response.text) == (404, "Not Found")
    assert (response.status_code, response.text) == (unknown.status_code, unknown.text)


async def test_metrics_with_the_token_are_served(api: Api) -> None:
    # when
    response = await api.client.get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )

    # then
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE keyplane_auth_failures_total counter" in response.text


@pytest.mark.parametrize("metrics_token", [None])
async def test_metrics_are_not_found_when_no_token_is_set(api: Api) -> None:
    # when
    response = await api.client.get("/metrics", headers={"Authorization": "Bearer None"})
    bare = await api.client.get("/metrics")

    # then
    assert [response.status_code, bare.status_code] == [404, 404]


@development
@pytest.mark.parametrize("metrics_token", [None])
async def test_metrics_stay_open_in_development(api: Api) -> None:
    # when
    response = await api.client.get("/metrics")

    # then
    assert response.status_code == 200
    assert "# TYPE keyplane_auth_failures_total counter" in response.text


# X-Request-Id


async def test_every_kind_of_response_carries_a_request_id(api: Api) -> None:
    # given
    client = api.client
    json_post = {"Content-Type": "application/json"}

    bearer = {"Authorization": f"Bearer {METRICS_TOKEN}"}

    # when
    responses = {
        "query": await client.post("/graphql", json={"query": VIEWER}),
        "bad json": await client.post("/graphql", content=b"{not json", headers=json_post),
        "bad key": await client.post(
            "/graphql", json={"query": VIEWER}, headers={"Authorization": "Bearer fm_nonsense"}
        ),
        "too large": await client.post(
            "/graphql", content=b" " * (MAX_BODY_BYTES + 1), headers=json_post
        ),
        "get": await client.get("/graphql", params={"query": VIEWER}),
        "form": await client.post("/graphql", data={"query": VIEWER}),
        "unknown path": await client.get("/no-such-path"),
        "healthz": await client.get("/healthz"),
        "metrics": await client.get("/metrics", headers=bearer),
        "metrics hidden": await client.get("/metrics"),
    }

    # then
    assert {kind: r.status_code for kind, r in responses.items()} == {
        "query": 200,
        "bad json": 400,
        "bad key": 401,
        "too large": 413,
        "get": 405,
        "form": 415,
        "unknown path": 404,
        "healthz": 200,
        "metrics": 200,
        "metrics hidden": 404,
    }
    ids = [r.headers.get("x-request-id", "") for r in responses.values()]
    assert all(REQUEST_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    "rate_limits", ["api_key=5000/minute;oauth=5000/minute;jwt=5000/minute;anonymous=1/minute"]
)
async def test_a_rate_limited_response_carries_a_request_id(api: Api) -> None:
    # when
    first = await api.gql(VIEWER)
    refused = await api.gql(VIEWER)

    # then
    assert (first.status, refused.status) == (200, 429)
    assert REQUEST_ID.fullmatch(refused.headers["x-request-id"])


class TestWithTheRateLimitStorageDown:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(
            settings, rate_limit_storage="redis://127.0.0.1:1/0", rate_limit_fail_closed=True
        )

    async def test_a_503_carries_a_request_id(self, api: Api) -> None:
        # when
        result = await api.gql(VIEWER)

        # then
        assert result.status == 503
        assert REQUEST_ID.fullmatch(result.headers["x-request-id"])


@pytest.mark.parametrize(
    ("sent", "reused"),
    [
        ("edge-7f3a.42:1", True),
        ("x" * 64, True),
        ("x" * 65, False),
        ("two words", False),
        ("id\u00e9", False),
        ("", False),
    ],
)
async def test_a_short_safe_incoming_request_id_is_reused_and_any_other_replaced(
    api: Api, sent: str, reused: bool
) -> None:
    # when
    response = await api.client.post(
        "/graphql", json={"query": VIEWER}, headers={b"X-Request-Id": sent.encode()}
    )

    # then
    answered = response.headers.get_list("x-request-id")
    assert len(answered) == 1
    assert (answered[0] == sent) is reused
    if not reused:
        assert REQUEST_ID.fullmatch(answered[0])


async def test_an_internal_error_names_its_request_id_in_the_body_and_the_log(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given
    token = await api.sign_up()

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(project_resolvers, "list_projects", broken)

    # when
    with caplog.at_level(logging.ERROR, logger="keyplane.errors"):
        result = await api.gql("{ projects { id } }", token=token)

    # then
    request_id = result.headers["x-request-id"]
    assert REQUEST_ID.fullmatch(request_id)
    assert [e["extensions"] for e in result.errors] == [
        {"code": "INTERNAL", "requestId": request_id}
    ]
    assert [r.getMessage() for r in caplog.records if r.name == "keyplane.errors"] == [
        f"unexpected error at ['projects'] (request {request_id})"
    ]


# No secret in any log


def test_the_filter_redacts_messages_arguments_and_tracebacks() -> None:
    # given
    key, invitation = generate_secret(), generate_token()
    token = ".".join(  # a JWT's shape, made here so that no token stands in the repository
        base64.urlsafe_b64encode(part).decode().rstrip("=")
        for part in (b'{"alg":"HS256"}', b'{"sub":"usr_1"}', b"signature-_x")
    )
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets())
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False

    # when
    try:
        logger.warning("key %s and %r in %s", key, {"password": "hunter2"}, f"/x?t={invitation}")
        try:
            raise ValueError(f"bad token {token}")
        except ValueError:
            logger.exception("signUp(input: {password: %s})", '"correct horse"')
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    # then
    lines = out.getvalue().splitlines()
    assert lines[0] == "key fm_…[redacted] and {'password': '[redacted]'} in /x?t=fmi_…[redacted]"
    assert lines[1] == 'signUp(input: {password: "[redacted]"})'
    assert lines[-1] == "ValueError: bad token eyJ…[redacted]"


@pytest.mark.slow
def test_a_served_access_log_holds_no_secret_sent_in_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: `keyplane serve --access-log` in production, its whole output in one file; the
    # test's own client logs every URL it sends (httpx, INFO): silenced, so that the secrets
    # this test sends on purpose do not reach the suite's log, which CI scans for secrets
    monkeypatch.setattr(logging.getLogger("httpx"), "disabled", True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")},
        "KEYPLANE_DATA_DIR": str(tmp_path / "data"),
        "KEYPLANE_JWT_SECRET": secrets.token_urlsafe(48),
        "KEYPLANE_METRICS_TOKEN": METRICS_TOKEN,
    }
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "keyplane", "serve", "--port", str(port), "--access-log"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_ready(base, process, log)
        with httpx.Client(base_url=base, timeout=10) as client:
            signed = client.post(
                "/graphql",
                json={
                    "query": "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
                    "variables": {"i": {"email": "a@x.org", "password": PASSWORD, "name": "A"}},
                },
            )
            jwt = signed.json()["data"]["signUp"]["accessToken"]
            key, invitation = generate_secret(), generate_token()
            sent = [key, invitation, jwt, PASSWORD, "correct horse"]

            # when: each secret is put where an access log writes it, the URL
            client.get("/graphql", params={"query": VIEWER, "api_key": key})
            client.get("/graphql", params={"invitation": invitation, "access_token": jwt})
            client.get("/login", params={"user": "a@x.org", "password": PASSWORD})
            client.get("/graphql", params={"query": SIGN_UP})
            client.get("/metrics", params={"key": key})
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)

    # then
    written = log.read_text()
    assert "GET /graphql?query=%7B+viewer+%7B+kind+%7D+%7D&api_key=fm_…[redacted] " in written
    assert "GET /login?user=a%40x.org&password=[redacted] " in written
    assert "GET /metrics?key=fm_…[redacted] " in written
    assert [secret for secret in sent if secret in written] == []
    assert "correct+horse" not in written
