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

    Up to `max_in_flight` requests are in progress at once (one waiting on the database or
    Redis counts); past that, a request is refused (503) at once, never queued, so a burst of
    slow operations cannot keep cheap requests waiting.

    With a queue (`max_queued` > 0), one request starts per pass of the event loop, and the
    others wait for a later pass. A request that awaits no I/O runs from start to end within
    one pass, so if every request that arrived in a pass started in it, a burst would pile up
    out of sight, in the sockets and the event loop's own queue: the in-flight count stays
    low, nothing is refused, and every answer is late (bench/results/overload.md). One start a
    pass keeps the backlog in this queue, where it is counted and ordered:
    - first come, first served while up to `max_queued` wait. Closed-loop clients (one request
      at a time per connection) never fill it if there are fewer of them than `max_queued`;
    - an arrival that finds it full means arrivals outrun the worker: it is *overloaded*. Only
      the newest `overload_queue` waiters are kept, and the newest goes first: a pass's turn goes
      to its own first arrival if it has one, else to the newest waiter, and an arrival that
      finds the queue full refuses the oldest waiter. So what is served is served about as
      fast as when unloaded, and what is not gets its 503 after a few passes of the loop;
    - the worker is no longer overloaded once its queue is empty.
    """

    def __init__(self, *, max_in_flight: int, max_queued: int, overload_queue: int = 16) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.overload_queue = max(1, min(overload_queue, max_queued))
        self.in_flight = 0
        self.overloaded = False
        self._waiting: deque[asyncio.Future[bool]] = deque()
        self._started_in_pass = False  # a request started in this pass of the event loop
        self._next_pass_due = False  # `_next_pass` is scheduled (call_soon: the next pass)

    def enter_now(self) -> bool:
        """A turn without waiting (the hot path: no await): there is room and, with a queue,
        nothing else started in this pass of the event loop, and nobody waits (or the worker
        is overloaded: then the newest goes first, and this is the newest)."""
        if self.in_flight >= self.max_in_flight:
            return False
        if self.max_queued > 0:
            if self._started_in_pass or (self._waiting and not self.overloaded):
                return False
            self._started_in_pass = True
            self._call_next_pass()
        self.in_flight += 1
        return True

    async def wait(self) -> bool:
        """True once this request was given its turn; False: refused."""
        if self.max_queued <= 0 or self.in_flight >= self.max_in_flight:
            return False  # at the in-flight limit: refused at once, never queued
        waiting = self._waiting
        if not self.overloaded and len(waiting) >= self.max_queued:
            self.overloaded = True
        if self.overloaded:
            while len(waiting) >= self.overload_queue:
                _refuse(waiting.popleft())
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiting.append(turn)
        self._call_next_pass()
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.leave()  # the turn was given just as the client went: pass it on
            elif turn in waiting:
                waiting.remove(turn)
            raise

    def leave(self) -> None:
        """A request is done: its place is free for a waiter, in the next pass."""
        self.in_flight -= 1
        if self._waiting:
            self._call_next_pass()

    def _call_next_pass(self) -> None:
        if not self._next_pass_due:
            self._next_pass_due = True
            asyncio.get_running_loop().call_soon(self._next_pass)

    def _next_pass(self) -> None:
        """At the start of a pass, before its arrivals: a waiter may get the turn."""
        self._next_pass_due = False
        started = self._started_in_pass  # in the pass that just ended
        self._started_in_pass = False
        waiting = self._waiting
        if self.in_flight >= self.max_in_flight:
            while waiting:  # at the limit: refused at once, like an arrival
                _refuse(waiting.popleft())
        if self.overloaded and started and waiting:
            # The last pass had an arrival to start, and so may this one: its turn is kept
            # for that arrival, the newest; a waiter gets it after a pass that started nothing.
            self._call_next_pass()
            return
        while waiting:
            turn = waiting.pop() if self.overloaded else waiting.popleft()
            if turn.done():  # cancelled: its task has not run its handler yet
                continue
            self.in_flight += 1
            turn.set_result(True)
            self._started_in_pass = True
            self._call_next_pass()
            return
        self.overloaded = False


def _refuse(turn: asyncio.Future[bool]) -> None:
    if not turn.done():
        turn.set_result(False)
