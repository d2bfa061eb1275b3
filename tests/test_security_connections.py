"""Connections (issue 15, Build 7): request heads arrive within a deadline, and in-flight
requests are bounded per worker without counting idle keep-alive connections.

Through real `keyplane serve` processes: the head deadline lives in uvicorn's protocol.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from uvicorn.config import Config
from uvicorn.protocols.http import h11_impl, httptools_impl
from uvicorn.server import ServerState

from keyplane.connections import H11HeadDeadline, HeadDeadlineProtocol, HttpToolsHeadDeadline
from tests.helpers import BUSY_BODY
from tests.serve_process import keyplane_serve

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]

VIEWER = json.dumps({"query": "{ viewer { kind } }"}).encode()
VIEWER_DATA = {
    "data": {"viewer": {"kind": "ANONYMOUS"}},
    "extensions": {"cost": {"requested": 1, "maximum": 25_000}},
}
JSON = {"Content-Type": "application/json"}
# Enough anonymous requests for these tests: what is measured here is never the rate limit.
GENEROUS = "anonymous=100000/minute"


def _head(length: int) -> bytes:
    return (
        b"POST /graphql HTTP/1.1\r\nHost: keyplane\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {
        name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(status_line.split()[1]), headers, body


async def _closed_after(reader: asyncio.StreamReader, *, within: float) -> float:
    """Seconds until the server closed the connection (reading gives EOF)."""
    started = time.monotonic()
    remainder = await asyncio.wait_for(reader.read(), within)
    assert remainder == b""
    return time.monotonic() - started


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with keyplane_serve(
        tmp_path, KEYPLANE_REQUEST_HEAD_TIMEOUT="1", KEYPLANE_RATE_LIMITS=GENEROUS
    ) as base:
        yield base


def _address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


def test_uvicorn_still_has_what_the_head_deadline_relies_on() -> None:
    """keyplane.connections subclasses uvicorn internals: an upgrade that moves them must
    fail here, loudly, rather than silently drop the deadline."""
    # given
    hooks = {
        httptools_impl.HttpToolsProtocol: (
            "connection_made",
            "connection_lost",
            "on_headers_complete",
            "on_response_complete",
            "_start_asgi_task",  # an overloaded worker holds requests back here
        ),
        h11_impl.H11Protocol: (
            "connection_made",
            "connection_lost",
            "data_received",
            "on_response_complete",
        ),
    }

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("never called")

    # when
    missing = [
        f"{protocol.__name__}.{hook}"
        for protocol, names in hooks.items()
        for hook in names
        if not callable(protocol.__dict__.get(hook))
    ]
    loop = asyncio.new_event_loop()
    try:
        instances = [
            cls(config=Config(app=app), server_state=ServerState(), app_state={}, _loop=loop)
            for cls in (HttpToolsHeadDeadline, H11HeadDeadline)
        ]
    finally:
        loop.close()
    attributes = {
        type(instance).__name__: sorted(
            name
            for name in ("loop", "transport", "cycle", "conn", "head_deadline", "app_state")
            if hasattr(instance, name)
        )
        for instance in instances
    }
    cycle_init = inspect.getsource(httptools_impl.RequestResponseCycle.__init__)
    # What HeldRequest reads and sets on a cycle to answer it without ASGI.
    held = [
        "scope",
        "keep_alive",
        "default_headers",
        "disconnected",
        "response_started",
        "response_complete",
        "waiting_for_100_continue",
        "message_event",
        "on_response",
        "access_log",
        "access_logger",
    ]

    # then
    assert missing == []
    assert attributes == {
        "HttpToolsHeadDeadline": ["app_state", "cycle", "head_deadline", "loop", "transport"],
        "H11HeadDeadline": ["app_state", "conn", "cycle", "head_deadline", "loop", "transport"],
    }
    assert "self.response_complete = False" in cycle_init
    assert [name for name in held if f"self.{name} = " not in cycle_init] == []
    start_task = inspect.signature(httptools_impl.HttpToolsProtocol._start_asgi_task)
    assert list(start_task.parameters) == ["self", "cycle", "app"]
    assert HeadDeadlineProtocol is HttpToolsHeadDeadline


async def test_a_connection_that_trickles_its_request_head_is_closed_at_the_deadline(
    server: str,
) -> None:
    # given: a head that never ends, one byte at a time (each byte used to reset uvicorn's
    # only timer, the keep-alive one)
    reader, writer = await asyncio.open_connection(*_address(server))
    started = time.monotonic()

    async def trickle() -> None:
        for byte in b"POST /graphql HTTP/1.1\r\nHost: keyplane\r\nX-Slow: " + b"a" * 100:
            writer.write(bytes([byte]))
            await asyncio.sleep(0.1)

    sending = asyncio.create_task(trickle())

    # when
    await _closed_after(reader, within=5)
    elapsed = time.monotonic() - started
    sending.cancel()
    writer.close()

    # then
    assert 0.9 <= elapsed < 2.5


async def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(server: str) -> None:
    # given
    reader, writer = await asyncio.open_connection(*_address(server))

    # when
    elapsed = await _closed_after(reader, within=5)
    writer.close()

    # then
    assert 0.9 <= elapsed < 2.5


async def test_a_keep_alive_client_gets_a_fresh_deadline_for_each_request_head(
    server: str,
) -> None:
    # given: one connection used for longer than the head deadline, with pauses shorter
    # than it between requests
    reader, writer = await asyncio.open_connection(*_address(server))

    # when
    answers = []
    for _ in range(4):
        writer.write(_head(len(VIEWER)) + VIEWER)
        status, _, body = await _read_response(reader)
        answers.append((status, json.loads(body)))
        await asyncio.sleep(0.6)
    writer.close()

    # then
    assert answers == [(200, VIEWER_DATA)] * 4


async def test_a_slow_but_complete_request_head_is_served(server: str) -> None:
    # given: the head in three parts within the deadline, then the body well after it (the
    # deadline is for the head only)
    reader, writer = await asyncio.open_connection(*_address(server))
    head = _head(len(VIEWER))

    # when
    for part in (head[:10], head[10:30], head[30:]):
        writer.write(part)
        await asyncio.sleep(0.25)
    await asyncio.sleep(1.5)
    writer.write(VIEWER)
    status, _, body = await _read_response(reader)
    writer.close()

    # then
    assert (status, json.loads(body)) == (200, VIEWER_DATA)


async def test_requests_beyond_the_in_flight_limit_get_an_immediate_503(
    tmp_path: Path,
) -> None:
    # no queue: KEYPLANE_MAX_QUEUED=0 (a queue's waiters are tests/test_admission.py's)
    with keyplane_serve(
        tmp_path,
        KEYPLANE_MAX_IN_FLIGHT="2",
        KEYPLANE_MAX_QUEUED="0",
        KEYPLANE_RATE_LIMITS=GENEROUS,
    ) as base:
        # given: two requests in flight, their bodies not yet complete
        streams = [await asyncio.open_connection(*_address(base)) for _ in range(2)]
        for _, writer in streams:
            writer.write(_head(len(VIEWER)) + VIEWER[:5])
        await asyncio.sleep(0.5)

        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            # when
            started = time.monotonic()
            refused = await client.post("/graphql", content=VIEWER, headers=JSON)
            refused_in = time.monotonic() - started
            health = await client.get("/healthz")
            ready = await client.get("/readyz")
            for _, writer in streams:
                writer.write(VIEWER[5:])
            finished = [await _read_response(reader) for reader, _ in streams]
            for _, writer in streams:
                writer.close()
            afterwards = await client.post("/graphql", content=VIEWER, headers=JSON)

    # then
    assert (refused.status_code, refused.headers["retry-after"], refused.json()) == (
        503,
        "1",
        BUSY_BODY,
    )
    assert refused_in < 2  # at once: nothing waits for the busy requests
    assert (health.status_code, ready.status_code) == (200, 200)
    assert [(status, json.loads(body)) for status, _, body in finished] == [(200, VIEWER_DATA)] * 2
    assert (afterwards.status_code, afterwards.json()) == (200, VIEWER_DATA)


async def test_a_client_holding_32_busy_keep_alive_connections_never_sees_a_503(
    tmp_path: Path,
) -> None:
    with keyplane_serve(tmp_path, KEYPLANE_RATE_LIMITS=GENEROUS) as base:
        # given: a pool of 32 connections kept alive between rounds (the default limit)
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as client:
            # when: 5 rounds of 32 requests at once, with idle connections in between
            statuses: list[int] = []
            for _ in range(5):
                responses = await asyncio.gather(
                    *(client.post("/graphql", content=VIEWER, headers=JSON) for _ in range(32))
                )
                statuses.extend(response.status_code for response in responses)
                await asyncio.sleep(0.2)

    # then
    assert statuses == [200] * 160
