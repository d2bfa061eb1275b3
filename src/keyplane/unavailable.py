"""503 answers: more requests in flight than a worker takes on, or a database that does not answer.

Both are passing conditions, so both say when to come back (`Retry-After`) and carry the code
SERVICE_UNAVAILABLE in the usual GraphQL error body.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Protocol

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


class Waiter(Protocol):
    """A request waiting for its turn while the worker is overloaded: a task awaiting
    `Admission.wait`, or one the HTTP protocol holds back before any task exists
    (connections.py), which makes a refusal much cheaper."""

    since: float  # loop time it began to wait (set by `Admission`)

    def gone(self) -> bool:
        """Its client left (or it was answered): it neither starts nor is refused."""
        ...

    def start(self) -> None:
        """Its turn: it is already counted in flight."""
        ...

    def refuse(self) -> None:
        """The 503."""
        ...


class _Awaiting:
    """A waiter that is a task awaiting `Admission.wait`: the future says how it ends."""

    __slots__ = ("since", "turn")

    def __init__(self, turn: asyncio.Future[bool]) -> None:
        self.turn = turn
        self.since = 0.0

    def gone(self) -> bool:
        return self.turn.done()

    def start(self) -> None:
        self.turn.set_result(True)

    def refuse(self) -> None:
        if not self.turn.done():
            self.turn.set_result(False)


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
      queue full refuses the oldest waiter, and so does a pass that finds the oldest has
      waited more than `max_wait` (2 ms: served later, it would be served late). So what is
      served is served about as fast as when unloaded, and what is not gets its 503 after a
      few passes, not after a long wait;
    - the worker is no longer overloaded at the first pass `calm` seconds after it last refused a
      waiter (else every lull would let the next burst build up again): whoever waits
      starts then. Waiting alone does not count: closed-loop clients, fewer than `max_queued`,
      that come along while it is overloaded wait their turns, but never keep it overloaded.
    `max_queued` = 0 turns this off: every request within `max_in_flight` starts at once.

    A waiter is a task in `wait` (the request that found the worker overloaded, or any
    request when the server is not keyplane's), or, while overloaded, a request that
    keyplane's HTTP protocol holds back before making its task (`hold`, connections.py): most
    requests an overloaded worker gets are refused, and such a refusal costs no task, no
    pass of the event loop and one write.
    """

    def __init__(
        self,
        *,
        max_in_flight: int,
        max_queued: int,
        overload_starts: int = 64,
        calm: float = 0.1,
        max_wait: float = 0.002,
    ) -> None:
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.overload_starts = max(1, overload_starts)
        self.calm = calm
        self.max_wait = max_wait
        self.in_flight = 0
        self.overloaded = False
        self._pressed_at = 0.0  # loop time of the last sign of overload: a waiter pushed out
        self._waiting: deque[Waiter] = deque()
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
        turn: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        waiter = _Awaiting(turn)
        self._queue(waiter)
        try:
            return await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.leave()  # the turn was given just as the client went: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def hold(self, waiter: Waiter) -> None:
        """An arrival turned away by `enter_now` while overloaded, held back by the HTTP
        protocol before any task exists: it waits like a task in `wait`, or is refused."""
        if self.in_flight >= self.max_in_flight:
            waiter.refuse()  # at the in-flight limit: refused at once, never queued
            return
        self._queue(waiter)

    def _queue(self, waiter: Waiter) -> None:
        waiting = self._waiting
        waiter.since = now = asyncio.get_running_loop().time()
        if len(waiting) >= self.max_queued:
            self._pressed_at = now
            while len(waiting) >= self.max_queued:
                waiting.popleft().refuse()
        waiting.append(waiter)
        self._call_next_pass()

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
        now = asyncio.get_running_loop().time()
        if now - self._pressed_at > self.calm:
            # Calm: whoever waits starts now, as any arrival would (a closed loop keeps some
            # waiting at every pass, so an empty queue would never come).
            self.overloaded = False
            while waiting:
                waiter = waiting.popleft()
                if waiter.gone():
                    continue
                if self.in_flight >= self.max_in_flight:
                    waiter.refuse()
                    continue
                self.in_flight += 1
                self._started += 1
                waiter.start()
            if self._started:
                self._call_next_pass()  # they count as this pass's starts: restart next pass
            return
        if self.in_flight >= self.max_in_flight:
            while waiting:  # at the limit: refused at once, like an arrival
                waiting.popleft().refuse()
        stale = now - self.max_wait
        while waiting and waiting[0].since < stale:
            # Served now, it would be served late: refused, like a waiter pushed out.
            waiting.popleft().refuse()
            self._pressed_at = now
        if started and waiting:
            # The last pass had an arrival to start, and so may this one: its turn is kept
            # for that arrival, the newest; a waiter gets it after a pass that started nothing.
            self._call_next_pass()
            return
        while waiting:
            waiter = waiting.pop()
            if waiter.gone():  # its client left (a task: cancelled, its handler not run yet)
                continue
            self.in_flight += 1
            waiter.start()
            self._started = 1
            self._call_next_pass()
            return
