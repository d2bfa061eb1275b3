"""A served request leaves nothing for the garbage collector.

Everything a request makes (its context, request and response objects, the executor, the
viewer) dies when the request ends, by reference count. A reference cycle among them would keep
all of it until the collector's next pass found it: under load that made a collection of the
youngest generation every few requests, and the older generations' passes, which stop the
worker for milliseconds, many times a minute (bench/results/overload.md). Each test sends its
request once first (a new document's validation makes garbage of its own, once), then counts
what the collector finds after the same request again.
"""

from __future__ import annotations

import asyncio
import gc
import json
from collections import Counter
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.applications import Starlette

from keyplane.auth.api_key import generate_secret
from keyplane.edge import Edge
from tests.helpers import Api

VIEWER_KEY = "{ viewer { kind apiKey { id name scopes totalRequests lastUsedAt } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
VIEWER_USER = "{ viewer { kind user { id email } } }"
PAGE = """query($e: ID!) { environment(id: $e) { apiKeys(first: 20) {
  edges { node { id name prefix scopes status createdBy { id email } } }
  pageInfo { hasNextPage endCursor } } } }"""


@contextmanager
def unreachable() -> Iterator[Counter[str]]:
    """What became garbage inside the block (by type), found by a full collection."""
    found: Counter[str] = Counter()
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield found
        gc.collect()
        found.update(type(thing).__name__ for thing in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


async def asgi_post(
    app: Starlette, payload: Any, token: str | None = None
) -> tuple[int, dict[str, Any]]:
    """One POST /graphql straight through the ASGI app: no client objects of a test's own."""
    body = json.dumps(payload).encode()
    answer: dict[str, Any] = {"status": 0, "body": b""}
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] += message.get("body", b"")

    headers = [(b"host", b"keyplane.test"), (b"content-type", b"application/json")]
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("203.0.113.7", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return answer["status"], json.loads(answer["body"])


async def _twice(app: Starlette, payload: Any, token: str | None = None) -> Counter[str]:
    first = await asgi_post(app, payload, token)
    with unreachable() as garbage:
        again = await asgi_post(app, payload, token)
    assert again[0] == first[0]
    return garbage


@pytest.fixture
async def owner_and_key(api: Api) -> tuple[str, str, str]:
    """A dashboard session's token, its environment, and a MANAGE_PROJECT key's secret there."""
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    environment = await api.create_environment(owner, project_id)
    for n in range(3):
        await api.create_key(owner, environment, ["VIEW_ANALYTICS"], name=f"other{n}")
    _, secret = await api.create_key(owner, environment, ["MANAGE_PROJECT", "VIEW_ANALYTICS"])
    return owner, environment, secret


async def test_a_keyed_viewer_leaves_no_garbage(
    app: Starlette, owner_and_key: tuple[str, str, str]
) -> None:
    _, _, secret = owner_and_key
    assert await _twice(app, {"query": VIEWER_KEY}, secret) == Counter()


async def test_a_dashboard_viewer_leaves_no_garbage(
    app: Starlette, owner_and_key: tuple[str, str, str]
) -> None:
    owner, _, _ = owner_and_key
    assert await _twice(app, {"query": VIEWER_USER}, owner) == Counter()


async def test_a_page_of_keys_leaves_no_garbage_by_a_session_or_by_a_key(
    app: Starlette, owner_and_key: tuple[str, str, str]
) -> None:
    owner, environment, secret = owner_and_key
    page = {"query": PAGE, "variables": {"e": environment}}
    assert await _twice(app, page, owner) == Counter()
    assert await _twice(app, page, secret) == Counter()


async def test_a_batch_leaves_no_garbage(
    app: Starlette, owner_and_key: tuple[str, str, str]
) -> None:
    _, _, secret = owner_and_key
    assert await _twice(app, [{"query": VIEWER_KEY}] * 5, secret) == Counter()


async def test_an_anonymous_request_leaves_no_garbage(app: Starlette) -> None:
    assert await _twice(app, {"query": "{ __typename }"}) == Counter()


async def test_a_refused_key_leaves_no_garbage_malformed_unknown_or_revoked(
    app: Starlette, api: Api, owner_and_key: tuple[str, str, str]
) -> None:
    # A flood of bad keys is the load an API-key service meets most: each 401 must not leave
    # its exception's traceback in a cycle either.
    owner, environment, _ = owner_and_key
    key_id, revoked = await api.create_key(owner, environment, ["VIEW_ANALYTICS"], name="gone")
    (await api.gql(REVOKE, {"id": key_id}, token=owner)).ok()
    for secret in ("fm_" + "a" * 40, generate_secret(), revoked):
        status, _ = await asgi_post(app, {"query": VIEWER_KEY}, secret)
        assert status == 401
        assert await _twice(app, {"query": VIEWER_KEY}, secret) == Counter(), secret[:6]


async def test_a_refused_field_leaves_no_garbage(
    app: Starlette, owner_and_key: tuple[str, str, str]
) -> None:
    # An environment that is not there: the field's NOT_FOUND error, answered by its code.
    _, _, secret = owner_and_key
    page = {"query": PAGE, "variables": {"e": "RW52aXJvbm1lbnQ6MTIz"}}
    status, body = await asgi_post(app, page, secret)
    assert (status, body["errors"][0]["extensions"]["code"]) == (200, "NOT_FOUND")
    assert await _twice(app, page, secret) == Counter()


def _edge(app: Starlette) -> Edge:
    """The app's outermost layer of its own (built with the app's first request)."""
    layer: Any = app.middleware_stack
    while not isinstance(layer, Edge):
        layer = layer.app
    return layer


async def test_a_request_refused_as_busy_leaves_no_garbage(app: Starlette) -> None:
    # Under overload most requests are these 503s: each must die by reference count too.
    await asgi_post(app, {"query": "{ __typename }"})
    admission = _edge(app).admission
    admission.in_flight = admission.max_in_flight  # at the limit: refused at once
    try:
        status, body = await asgi_post(app, {"query": "{ __typename }"})
        assert (status, body["errors"][0]["extensions"]["code"]) == (503, "SERVICE_UNAVAILABLE")
        assert await _twice(app, {"query": "{ __typename }"}) == Counter()
    finally:
        admission.in_flight = 0


async def test_a_request_without_a_query_leaves_no_garbage(app: Starlette) -> None:
    status, _ = await asgi_post(app, {"variables": {}})
    assert status == 400
    assert await _twice(app, {"variables": {}}) == Counter()
