"""What every HTTP request meets first, in one ASGI layer: its request id, CORS, the per-worker
in-flight limit and the body limit.

They were three middlewares; each layer costs every request a coroutine and an await (about
8k instructions of a keyed `viewer` query's 1.1M, bench/instructions.py) for a few
comparisons of work. Each keeps its own module for its rules:

- request_id.py: `X-Request-Id` on every answer (this layer is outermost, so the body limit's
  413 and the router's 404 and 405 carry it too), and the id for the error log;
- cors.py, when KEYPLANE_CORS_ORIGINS lists origins: preflights answered before anything
  counts or refuses them, and the CORS headers on every answer;
- unavailable.py: up to `max_in_flight` requests in progress on this worker, all starting at
  once unless a pass of the event loop starts so many that the worker is overloaded (then one
  a pass, up to `max_queued` waiting), and a 503 with Retry-After for the rest (requests, not
  connections: an idle keep-alive connection never counts; health probes are never refused
  nor queued). While the worker is overloaded, uvicorn's protocol asks this layer before it
  makes a request's task (`holds`, connections.py): a request it holds waits without a task,
  and its 503 (`busy_headers`) is written by the protocol, about a third of the cost of one
  answered through ASGI; this layer publishes itself to the protocol in the lifespan's state
  (`STATE_KEY`), and a request the protocol started already holds its turn (`ADMITTED`);
- body_limit.py: a request that declares one length within the limit, and no chunking,
  cannot exceed it (the server frames the body by that length) and goes straight on; every
  other one goes through Starlette's RequestBodyLimitMiddleware (413).
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyplane.body_limit import MAX_BODY_BYTES, declared_length
from keyplane.cors import Cors, origin_of
from keyplane.request_id import HEADER, current_request_id, request_id_of
from keyplane.unavailable import EXEMPT_PATHS, Admission, busy_messages

# The lifespan state's entry (uvicorn hands the same dict to its protocols) naming this layer.
STATE_KEY = "keyplane.edge"
# Set in a request's scope by the protocol that gave it its turn before its task started.
ADMITTED = "keyplane.admitted"


class Edge:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        max_queued: int = 0,
        max_queue_wait: float = 0.002,
        max_body_size: int = MAX_BODY_BYTES,
        cors_origins: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.cors = Cors(cors_origins) if cors_origins else None
        self.admission = Admission(
            max_in_flight=max_in_flight, max_queued=max_queued, max_wait=max_queue_wait
        )
        self.max_body_size = max_body_size
        self.limited = RequestBodyLimitMiddleware(app, max_body_size=max_body_size)
        self._busy = busy_messages()

    def holds(self, scope: Scope) -> bool:
        """Whether, while the worker is overloaded, this arriving request's turn may be decided
        before its task exists: not for what this layer answers without a turn (health probes
        and CORS preflights)."""
        if scope["path"] in EXEMPT_PATHS:
            return False
        return self.cors is None or not _may_be_preflight(scope, origin_of(scope["headers"]))

    def busy_headers(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers of the 503 for a request refused before its task existed, as
        `__call__` would have sent them (the body is `busy_body`)."""
        headers = scope["headers"]
        origin = origin_of(headers) if self.cors is not None else None
        return [*self._busy[0]["headers"], *self._answer_headers(request_id_of(headers), origin)]

    @property
    def busy_body(self) -> bytes:
        body: bytes = self._busy[1]["body"]
        return body

    def _answer_headers(
        self, request_id: str, origin: bytes | None
    ) -> tuple[tuple[bytes, bytes], ...]:
        """What this layer adds to every answer but a preflight's: the request id, and the
        CORS headers when origins are configured."""
        header = (HEADER, request_id.encode("ascii"))
        cors = self.cors
        if cors is None:
            return (header,)
        return (header, *cors.answer_headers(origin))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and "state" in scope:
                scope["state"][STATE_KEY] = self  # for the HTTP protocol (connections.py)
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        request_id = request_id_of(headers)
        preflight = None
        origin = None
        cors = self.cors
        if cors is not None:
            origin = origin_of(headers)
            if _may_be_preflight(scope, origin):
                preflight = cors.preflight(scope)
        added = (
            ((HEADER, request_id.encode("ascii")),)
            if preflight is not None
            else self._answer_headers(request_id, origin)
        )

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *added]
            await send(message)

        if preflight is not None:  # answered here: nothing counts, charges or refuses it
            await preflight(scope, receive, send_with_id)
            return
        token = current_request_id.set(request_id)
        try:
            exempt = scope["path"] in EXEMPT_PATHS  # health probes are never refused as busy
            admission = self.admission
            if (
                not exempt
                and ADMITTED not in scope
                and not admission.enter_now()
                and not await admission.wait()
            ):
                for message in self._busy:
                    await send_with_id(dict(message))  # a copy: send_with_id adds a header
                return
            length = declared_length(headers)
            inner = (
                self.app if length is not None and length <= self.max_body_size else self.limited
            )
            if exempt:
                await inner(scope, receive, send_with_id)
                return
            try:
                await inner(scope, receive, send_with_id)
            finally:
                admission.leave()
        finally:
            current_request_id.reset(token)


def _may_be_preflight(scope: Scope, origin: bytes | None) -> bool:
    """An OPTIONS request with an Origin: cors.py answers it if it asks for a preflight."""
    return origin is not None and scope["method"] == "OPTIONS"
