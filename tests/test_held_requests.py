"""An overloaded worker decides a request's turn before uvicorn makes its task (connections.py).

Through a real uvicorn server on a loopback port, in the test's event loop, running keyplane's
HTTP protocol and edge layer in front of an app that answers at once. Requests sent in one go
from many connections are read by the server in one pass of its event loop, which is what
overloads it; the worker is kept overloaded (`calm`) for as long as each test needs.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.connections import HttpToolsHeadDeadline
from keyplane.edge import STATE_KEY, Edge
from keyplane.unavailable import BUSY_RETRY_SECONDS, Admission
from tests.helpers import BUSY_BODY

ORIGIN = "https://dashboard.example"


@dataclass
class Worker:
    port: int
    edge: Edge
    reached: list[str] = field(default_factory=list)  # request ids that got an ASGI task

    def overload_with(self, *, max_queued: int, calm: float) -> Admission:
        """A fresh admission that one pass of more than 4 starts overloads."""
        admission = Admission(
            max_in_flight=100, max_queued=max_queued, overload_starts=4, calm=calm, max_wait=3600
        )
        self.edge.admission = admission
        return admission


class _Reached:
    """Outside the edge layer: every request that got a task passes here."""

    def __init__(self, app: ASGIApp, reached: list[str]) -> None:
        self.app = app
        self.reached = reached

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.reached.append(dict(scope["headers"]).get(b"x-request-id", b"").decode())
        await self.app(scope, receive, send)


@pytest.fixture
async def worker() -> AsyncIterator[Worker]:
    reached: list[str] = []
    edges: list[Edge] = []

    async def answer(request: Request) -> JSONResponse:
        edges.append(request.scope["state"][STATE_KEY])
        body = await request.body()
        return JSONResponse({"ok": True, "bytes": len(body)})

    app = Starlette(
        routes=[Route("/graphql", answer, methods=["POST"])],
        middleware=[
            Middleware(_Reached, reached=reached),
            Middleware(Edge, max_in_flight=100, max_queued=16, cors_origins=[ORIGIN]),
        ],
    )
    config = uvicorn.Config(app, http=HttpToolsHeadDeadline, log_level="warning")
    server = uvicorn.Server(config)
    listening = socket.create_server(("127.0.0.1", 0))  # connections wait here until it runs
    port = listening.getsockname()[1]
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    warm_up = await _connect(port)
    status, _, _ = await _exchange(*warm_up, "warm-up")
    assert status == 200
    await _close([warm_up])
    reached.clear()
    try:
        yield Worker(port=port, edge=edges[0], reached=reached)
    finally:
        server.should_exit = True
        await serving
        listening.close()


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _connect(port: int) -> Connection:
    return await asyncio.open_connection("127.0.0.1", port)


def _request(request_id: str, body: bytes = b"{}", *, origin: str | None = None) -> bytes:
    head = (
        f"POST /graphql HTTP/1.1\r\nHost: keyplane\r\nContent-Type: application/json\r\n"
        f"X-Request-Id: {request_id}\r\nContent-Length: {len(body)}\r\n"
    )
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    return (head + "\r\n").encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {
        name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)
    }
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 10)
    return int(status_line.split()[1]), headers, body


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request_id: str
) -> tuple[int, dict[str, str], bytes]:
    writer.write(_request(request_id))
    return await _response(reader)


async def _volley(port: int, count: int, prefix: str) -> list[Connection]:
    """`count` connections, then one request on each written in one go: the server reads
    them all in one pass of its event loop."""
    connections = [await _connect(port) for _ in range(count)]
    for number, (_, writer) in enumerate(connections):
        writer.write(_request(f"{prefix}-{number}"))
    return connections


async def _close(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()
    await asyncio.gather(*(writer.wait_closed() for _, writer in connections))


async def test_when_overloaded_the_requests_refused_never_get_a_task(worker: Worker) -> None:
    # given: a worker overloaded by a pass of more than 4 starts, with 2 places to wait
    admission = worker.overload_with(max_queued=2, calm=3600)
    first = await _volley(worker.port, 6, "first")
    first_answers = [await _response(reader) for reader, _ in first]
    assert admission.overloaded

    # when: 10 more arrive in one pass while it is overloaded
    second = await _volley(worker.port, 10, "second")
    second_answers = [await _response(reader) for reader, _ in second]

    # then: the pass's first arrival starts and the 2 newest wait and are served; the other
    # 7 are refused by the protocol, and only the served ones ever reached the app
    statuses = [status for status, _, _ in second_answers]
    assert statuses == [200] + [503] * 7 + [200] * 2
    assert [status for status, _, _ in first_answers].count(200) >= 5
    served = {f"second-{n}" for n in (0, 8, 9)}
    assert served <= set(worker.reached)
    assert not {f"second-{n}" for n in range(1, 8)} & set(worker.reached)
    assert admission.in_flight == 0
    await _close(first + second)


async def test_a_refusal_written_by_the_protocol_is_the_edge_layers_503(worker: Worker) -> None:
    # given: an overloaded worker with nowhere to wait
    worker.overload_with(max_queued=1, calm=3600)
    await _close(await _volley(worker.port, 6, "first"))

    # when: three requests from an allowed origin arrive in one pass
    connections = [await _connect(worker.port) for _ in range(3)]
    for number, (_, writer) in enumerate(connections):
        writer.write(_request(f"refused-{number}", origin=ORIGIN))
    answers = [await _response(reader) for reader, _ in connections]

    # then: the middle one (the oldest waiter when the newest came) is refused
    status, headers, body = answers[1]
    assert status == 503
    assert headers["retry-after"] == str(BUSY_RETRY_SECONDS)
    assert headers["content-type"] == "application/json"
    assert headers["x-request-id"] == "refused-1"
    assert headers["access-control-allow-origin"] == ORIGIN
    assert {"date", "server"} <= set(headers)
    assert json.loads(body) == BUSY_BODY
    assert "refused-1" not in worker.reached
    await _close(connections)


async def test_a_connection_whose_request_was_refused_goes_on_serving(worker: Worker) -> None:
    # given: an overloaded worker with nowhere to wait, that calms down after 50 ms
    admission = worker.overload_with(max_queued=1, calm=0.05)
    await _close(await _volley(worker.port, 6, "first"))
    connections = [await _connect(worker.port) for _ in range(3)]
    body = json.dumps({"query": "{ viewer { kind } }"}).encode()
    for number, (_, writer) in enumerate(connections):
        writer.write(_request(f"kept-{number}", body))
    statuses = [(await _response(reader))[0] for reader, _ in connections]
    assert statuses == [200, 503, 200]

    # when: the refused connection sends its next request once the worker is calm
    await asyncio.sleep(0.3)
    reader, writer = connections[1]
    status, headers, answer = await _exchange(reader, writer, "kept-again")

    # then: the refused request's body was read and dropped, and the next one is served
    assert not admission.overloaded
    assert (status, headers["x-request-id"]) == (200, "kept-again")
    assert json.loads(answer) == {"ok": True, "bytes": 2}
    await _close(connections)


async def test_a_held_request_whose_client_left_never_starts(worker: Worker) -> None:
    # given: an overloaded worker that calms down after 100 ms, with 4 places to wait
    worker.overload_with(max_queued=4, calm=0.1)
    await _close(await _volley(worker.port, 6, "first"))
    held = await _volley(worker.port, 4, "held")

    # when: the client of one waiting request leaves before its turn
    _, leaving = held.pop(2)
    leaving.close()
    answers = [await _response(reader) for reader, _ in held]

    # then: the others are served; the one that left never reached the app
    assert [status for status, _, _ in answers] == [200] * 3
    assert "held-2" not in worker.reached
    assert worker.edge.admission.in_flight == 0
    await _close(held)
