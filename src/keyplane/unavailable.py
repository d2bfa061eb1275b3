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
    """How many requests one worker works on at once, and what it does with a burst.

    Up to `max_in_flight` requests are in progress at once (one waiting on the database or
    Redis counts); past that, a request is refused (503) at once, never queued, so a burst of
    slow operations cannot keep cheap requests waiting.

    A request that awaits no I/O runs from start to end within one pass of the event loop, and
    every request that arrived during a pass starts in the next one. So under a burst the
    backlog is out of sight, in the sockets and the loop's own queue: the in-flight count stays
    low, nothing is refused, each pass is longer than the last, and every answer is late
    (bench/results/overload.md). What shows it is how many requests start in one pass. Every
    request within `max_in_flight` starts at once, as without any queue, and is only counted
    (if it comes from another task than the last start: one task's requests in a row are not a
    burst); the count restarts at the first pass after every 16th start (a quarter of
    `overload_starts`). So it passes `overload_starts` (64) only if one pass started more than
    48 (closed-loop clients, one request at a time per connection, never do it if there are no
    more than 48 of them), which means arrivals outrun the worker: it is *overloaded*, until it
    is calm again. Then:
    - one request starts per pass: the pass's own first arrival, the newest; if the pass has
      none, the newest waiter gets the turn;
    - the others wait, newest first, at most `max_queued` of them; an arrival that finds the
      queue full refuses the oldest waiter. So what is served is served about as fast as when
      unloaded, and what is not gets its 503 after a few passes, not after a long wait;
    - the worker is no longer overloaded at the first pass `calm` seconds after its queue last
      overflowed (else every lull would let the next burst build up again): whoever waits
      starts then. Waiting alone does not count: closed-loop clients, fewer than `max_queued`,
      that come along while it is overloaded wait their turns, but never keep it overloaded.
    `max_queued` = 0 turns this off: every request within `max_in_flight` starts at once.
    """

    def __init__(
        self,
        *,
        max_in_flight: int,
        max_queued: int,
        overload_starts: int = 64,
        calm: float = 0.1,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.overload_starts = max(1, overload_starts)
        self.calm = calm
        self.in_flight = 0
        self.overloaded = False
        self._pressed_at = 0.0  # loop time of the last sign of overload: a full queue
        self._waiting: deque[asyncio.Future[bool]] = deque()
        # Requests started since the count restarted: overloaded, at each pass of the event
        # loop; else at the first pass after every `_check_every`-th start (one callback per
        # that many requests, not one per pass).
        self._started = 0
        self._last_starter = 0  # id() of the task that made the last counted start
        self._check_every = max(1, self.overload_starts // 4)
        self._next_pass_due = False  # `_next_pass` is scheduled (call_soon: the next pass)

    def enter_now(self) -> bool:
        """A turn without waiting (the hot path: no await, and while not overloaded only a
        count): there is room and, overloaded, nothing else started in this pass."""
        if self.in_flight >= self.max_in_flight:
            return False
        if self.max_queued > 0:
            if self.overloaded:
                if self._started:
                    return False
                self._started = 1
                self._call_next_pass()
            else:
                # One task's requests one after another (an in-process client) are not
                # arrivals: only a start from another task than the last counts.
                task = id(asyncio.current_task())
                if task != self._last_starter:
                    self._last_starter = task
                    started = self._started + 1
                    if started >= self._check_every:
                        if started == self._check_every:
                            self._call_next_pass()  # the count restarts in the next pass
                        elif started > self.overload_starts:
                            self.overloaded = True
                            self._pressed_at = asyncio.get_running_loop().time()
                            return False
                    self._started = started
        self.in_flight += 1
        return True

    async def wait(self) -> bool:
        """True once this request was given its turn; False: refused."""
        if self.max_queued <= 0:
            return False
        if not self.overloaded and self.enter_now():
            return True  # no longer overloaded since this request was first turned away
        if not self.overloaded or self.in_flight >= self.max_in_flight:
            return False  # at the in-flight limit: refused at once, never queued
        loop = asyncio.get_running_loop()
        waiting = self._waiting
        if len(waiting) >= self.max_queued:
            self._pressed_at = loop.time()
            while len(waiting) >= self.max_queued:
                _refuse(waiting.popleft())
        turn: asyncio.Future[bool] = loop.create_future()
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
        """At the start of a pass, before its arrivals: a new count and, overloaded, maybe a
        turn for the newest waiter, or the end of the overload."""
        self._next_pass_due = False
        started = self._started  # in the pass that just ended, if overloaded
        self._started = 0
        if not self.overloaded:
            return
        waiting = self._waiting
        if asyncio.get_running_loop().time() - self._pressed_at > self.calm:
            # Calm: whoever waits starts now, as any arrival would (a closed loop keeps some
            # waiting at every pass, so an empty queue would never come).
            self.overloaded = False
            while waiting:
                turn = waiting.popleft()
                if turn.done():
                    continue
                if self.in_flight >= self.max_in_flight:
                    turn.set_result(False)
                    continue
                self.in_flight += 1
                self._started += 1
                turn.set_result(True)
            if self._started:
                self._call_next_pass()  # they count as this pass's starts: restart next pass
            return
        if self.in_flight >= self.max_in_flight:
            while waiting:  # at the limit: refused at once, like an arrival
                _refuse(waiting.popleft())
        if started and waiting:
            # The last pass had an arrival to start, and so may this one: its turn is kept
            # for that arrival, the newest; a waiter gets it after a pass that started nothing.
            self._call_next_pass()
            return
        while waiting:
            turn = waiting.pop()
            if turn.done():  # cancelled: its task has not run its handler yet
                continue
            self.in_flight += 1
            turn.set_result(True)
            self._started = 1
            self._call_next_pass()
            return


def _refuse(turn: asyncio.Future[bool]) -> None:
    if not turn.done():
        turn.set_result(False)
