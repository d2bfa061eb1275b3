"""503 answers: more requests in flight than a worker takes on, or a database that does not answer.

Both are passing conditions, so both say when to come back (`Retry-After`) and carry the code
SERVICE_UNAVAILABLE in the usual GraphQL error body.
"""

from __future__ import annotations

import json

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

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


class InFlightLimit:
    """Answers 503 at once when `limit` requests are already being processed by this worker.

    It counts requests, not connections: an idle keep-alive connection costs nothing here,
    which is why uvicorn's `limit_concurrency` (it counts connections too) is not used.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        body = json.dumps(_body("The server is busy; retry shortly.")).encode()
        self._start = {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(BUSY_RETRY_SECONDS).encode()),
            ],
        }
        self._body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send(self._start)
            await send(self._body)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
