"""503 answers: more requests in flight than a worker takes on, or a database that does not answer.

Both are passing conditions, so both say when to come back (`Retry-After`) and carry the code
SERVICE_UNAVAILABLE in the usual GraphQL error body.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque

from starlette.responses import JSONResponse
from starlette.types import Message

from keyplane.errors import ServiceUnavailable

DATABASE_RETRY_SECONDS = 2
BUSY_RETRY_SECONDS = 1
# Probes must tell "busy" from "down": they are never refused for being over the limit.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz"})


def _body(message: str) -> dict[str, object]:
    return {
        "data": None,
        "errors": [{"message": message, "extensions": {"code": ServiceUnavailable.code}}],
    }


def database_unavailable() -> JSONResponse:
    body = _body("The database is unavailable; retry shortly.")
    return JSONResponse(body, 503, headers={"Retry-After": str(DATABASE_RETRY_SECONDS)})


def busy_messages() -> tuple[Message, Message]:
    """The ASGI messages of the immediate 503 a worker at its in-flight limit answers (edge.py):
    requests are counted, not connections, which is why uvicorn's `limit_concurrency` (it
    counts connections too) is not used."""
    body = json.dumps(_body("The server is busy; retry shortly.")).encode()
    start: Message = {
        "type": "http.response.start",
        "status": 503,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(BUSY_RETRY_SECONDS).encode()),
        ],
    }
    return start, {"type": "http.response.body", "body": body}


class Admission:
    """How many requests one worker works on at once, and what waits for a turn.

    Up to `max_in_flight` run; up to `max_queued` more wait, and the rest are refused (503).
    Latency grows with what runs at once on one event loop, so a small number runs and a burst
    waits instead. While the queue is under half full (closed-loop clients: at most one request
    per connection) turns go first come, first served. Past half, arrivals outrun the worker
    (open-loop overload): the newest waiter goes first, so what is served is served about as fast
    as when unloaded, and when the queue is full an arrival refuses the oldest waiter (it has
    waited longest and would be served latest), which gets its 503 quickly instead of after a
    long wait (bench/overload.py measured it: bench/results/overload.md).
    """

    def __init__(self, *, max_in_flight: int, max_queued: int) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.in_flight = 0
        self._waiting: deque[asyncio.Future[bool]] = deque()

    def enter_now(self) -> bool:
        """A turn without waiting (the hot path: no await), if one is free and nobody waits."""
        if self.in_flight < self.max_in_flight and not self._waiting:
            self.in_flight += 1
            return True
        return False

    async def wait(self) -> bool:
        """True once a leaving request handed this one its turn; False: refused."""
        if self.max_queued <= 0:
            return False
        if len(self._waiting) >= self.max_queued:
            self._waiting.popleft().set_result(False)
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.leave()  # the turn was handed over just as the client went: pass it on
            elif turn in self._waiting:
                self._waiting.remove(turn)
            raise

    def leave(self) -> None:
        """A request is done: its turn passes to a waiter (in_flight unchanged) or is freed."""
        waiting = self._waiting
        while waiting:
            turn = waiting.pop() if 2 * len(waiting) > self.max_queued else waiting.popleft()
            if not turn.done():
                turn.set_result(True)
                return
        self.in_flight -= 1
