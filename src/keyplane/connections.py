"""A deadline for request heads: uvicorn protocols that close a connection whose head is late.

uvicorn 0.54 has no request-start timeout (its `timeout_keep_alive` runs only between requests
and any byte received stops it), so a client that never finishes a request head keeps its
connection, and a slot, forever. These subclasses of uvicorn's HTTP/1.1 protocols arm a timer
whenever the connection waits for a request head (when it opens, and after each response on a
keep-alive connection) and disarm it once a head is complete; when it fires, the connection is
closed. `keyplane serve` passes `HeadDeadlineProtocol` as uvicorn's `http` setting.

The uvicorn internals used here (the hooks overridden below and the attributes `loop`,
`transport`, `cycle.response_complete` and, for h11, `conn`) are checked by
tests/test_security_connections.py, which fails loudly if an upgrade moves them.
"""

from __future__ import annotations

import asyncio
import functools
import os
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

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
    def on_headers_complete(self) -> None:
        self.head_deadline.disarm()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request already read keeps the timer off: its head is complete.
        if self.cycle.response_complete:
            self.head_deadline.arm(self.transport)


# What uvicorn's "auto" would pick: httptools (installed with uvicorn[standard]) is faster.
HeadDeadlineProtocol = HttpToolsHeadDeadline
