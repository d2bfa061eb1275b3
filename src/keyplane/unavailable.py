"""503 answers: more requests in flight than a worker takes on, or a database that does not answer.

Both are passing conditions, so both say when to come back (`Retry-After`) and carry the code
SERVICE_UNAVAILABLE in the usual GraphQL error body.
"""

from __future__ import annotations

import json

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
