"""A deadline for request heads: uvicorn protocols that close a connection whose head is late.

uvicorn 0.54 has no request-start timeout (its `timeout_keep_alive` runs only between requests
and any byte received stops it), so a client that never finishes a request head keeps its
connection, and a slot, forever. These subclasses of uvicorn's HTTP/1.1 protocols arm a timer
whenever the connection waits for a request head (when it opens, and after each response on a
keep-alive connection) and disarm it once a head is complete; when it fires, the connection is
closed. `keyplane serve` passes `HeadDeadlineProtocol` as uvicorn's `http` setting.

The httptools protocol also asks the app's edge layer (edge.py), while the worker is
overloaded, whether each request may start before it makes the request's task
(`_start_asgi_task`): a request that must wait is held here without a task (`HeldRequest`),
and one refused gets its 503 written here in one write. Through ASGI a refusal costs a task,
two passes of the event loop and two writes: about 70 µs, a third of a served keyed request,
which an overloaded worker pays for every request it cannot serve (bench/results/overload.md).

The uvicorn internals used here (the hooks overridden below and the attributes `loop`,
`transport`, `app_state`, the cycle's `scope`, `keep_alive`, `default_headers`, `disconnected`,
`response_started`, `response_complete`, `message_event`, `on_response`, access logging and,
for h11, `conn`) are checked by tests/test_security_connections.py and
tests/test_held_requests.py, which fail loudly if an upgrade moves them.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any, cast

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from keyplane.edge import ADMITTED, STATE_KEY, Edge

HEAD_TIMEOUT_VARIABLE = "KEYPLANE_REQUEST_HEAD_TIMEOUT"
DEFAULT_HEAD_TIMEOUT_SECONDS = 10


@functools.cache
def head_timeout() -> float:
    """Read in each worker (uvicorn builds the protocol itself, from its import path);
    `keyplane serve` has validated the value in Settings before starting any."""
    raw = os.environ.get(HEAD_TIMEOUT_VARIABLE, "").strip()
    return float(raw) if raw else DEFAULT_HEAD_TIMEOUT_SECONDS


class HeadDeadline:
    """One connection's timer, running while the connection waits for a request head."""

    __slots__ = ("_handle", "_loop", "_seconds")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, transport: asyncio.BaseTransport) -> None:
        """Start the deadline unless it runs already: bytes that trickle in do not extend it."""
        if self._handle is None and not transport.is_closing():
            self._handle = self._loop.call_later(self._seconds, _close, transport)

    def disarm(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _close(transport: asyncio.BaseTransport) -> None:
    if not transport.is_closing():
        transport.close()


class _HeadDeadlineProtocol:
    """What both protocols share: the deadline starts with the connection and ends with it.
    Mixed in before uvicorn's protocol class, whose methods it extends."""

    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_deadline = HeadDeadline(self.loop, head_timeout())

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self.head_deadline.arm(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.head_deadline.disarm()
        super().connection_lost(exc)  # type: ignore[misc]


class H11HeadDeadline(_HeadDeadlineProtocol, H11Protocol):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow_state()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow_state()

    def _follow_state(self) -> None:
        # h11 says IDLE on the client's side exactly while no request head has been read.
        if self.conn.their_state is h11.IDLE:
            self.head_deadline.arm(self.transport)
        else:
            self.head_deadline.disarm()


class HttpToolsHeadDeadline(_HeadDeadlineProtocol, HttpToolsProtocol):
    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        edge = self.app_state.get(STATE_KEY)
        scope = cast(dict[str, Any], cycle.scope)
        if edge is None or not edge.admission.overloaded or not edge.holds(scope):
            super()._start_asgi_task(cycle, app)  # the usual path: edge.py counts it
            return
        admission = edge.admission
        if admission.enter_now():  # this pass's one start
            scope[ADMITTED] = True
            super()._start_asgi_task(cycle, app)
            return
        admission.hold(HeldRequest(self, cycle, app, edge))

    def on_headers_complete(self) -> None:
        self.head_deadline.disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request already read keeps the timer off: its head is complete.
        if self.cycle.response_complete:
            self.head_deadline.arm(self.transport)


class HeldRequest:
    """A request an overloaded worker holds back before its task exists (unavailable.py's
    `Waiter`): started, it gets its task as uvicorn would have made it; refused, the protocol
    writes its 503, as edge.py would have answered it, and the connection goes on."""

    __slots__ = ("app", "cycle", "edge", "protocol", "since")

    def __init__(
        self, protocol: HttpToolsHeadDeadline, cycle: RequestResponseCycle, app: Any, edge: Edge
    ) -> None:
        self.protocol = protocol
        self.cycle = cycle
        self.app = app
        self.edge = edge
        self.since = 0.0

    def gone(self) -> bool:
        return self.cycle.disconnected or self.cycle.response_started

    def start(self) -> None:
        cast(dict[str, Any], self.cycle.scope)[ADMITTED] = True
        # uvicorn's own method, not the override: the turn is decided, nothing to ask again.
        HttpToolsProtocol._start_asgi_task(self.protocol, self.cycle, self.app)

    def refuse(self) -> None:
        cycle = self.cycle
        if self.gone():
            return
        scope = cast(dict[str, Any], cycle.scope)
        if cycle.access_log:
            cycle.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(cycle.scope),
                scope["method"],
                get_path_with_query_string(cycle.scope),
                scope["http_version"],
                503,
            )
        content = [b"HTTP/1.1 503 Service Unavailable\r\n"]
        for name, value in (*cycle.default_headers, *self.edge.busy_headers(scope)):
            content += (name, b": ", value, b"\r\n")
        if not cycle.keep_alive:
            content.append(b"connection: close\r\n")
        content.append(b"\r\n")
        if scope["method"] != "HEAD":
            content.append(self.edge.busy_body)
        cycle.response_started = True
        cycle.response_complete = True  # the rest of its body, if any, is read and dropped
        cycle.waiting_for_100_continue = False
        transport = self.protocol.transport
        transport.write(b"".join(content))
        cycle.message_event.set()
        if not cycle.keep_alive:
            transport.close()
        cycle.on_response()


# What uvicorn's "auto" would pick: httptools (installed with uvicorn[standard]) is faster.
HeadDeadlineProtocol = HttpToolsHeadDeadline
