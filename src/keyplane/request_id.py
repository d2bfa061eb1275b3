"""`X-Request-Id` on every response, and the same id for the error log of the request.

The id is the caller's own `X-Request-Id` when it is short and of safe characters (so a proxy's id
follows the request through), otherwise a new random one. It is kept in a contextvar for the
length of the request, where the error masking reads it for INTERNAL errors and their log line.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
MAX_INCOMING_LENGTH = 64
_SAFE = re.compile(rb"[A-Za-z0-9._:-]+")

current_request_id: ContextVar[str | None] = ContextVar("keyplane_request_id", default=None)


# 32 hex digits: 16 random ones drawn once per process, then a counter. As unique as random
# ids across processes and restarts, and a tenth of the cost of os.urandom per request.
_PROCESS = secrets.token_hex(8)
_counter = itertools.count(int.from_bytes(secrets.token_bytes(4)))


def _reseed() -> None:  # a forked worker must not repeat its parent's ids
    global _PROCESS, _counter
    _PROCESS = secrets.token_hex(8)
    _counter = itertools.count(int.from_bytes(secrets.token_bytes(4)))


os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    return f"{_PROCESS}{next(_counter) & 0xFFFFFFFFFFFFFFFF:016x}"


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    for name, value in headers:  # ASGI header names are lower-case bytes
        if name == HEADER:
            if len(value) <= MAX_INCOMING_LENGTH and _SAFE.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()


class RequestId:
    """Pure ASGI (no BaseHTTPMiddleware: that costs ~440 µs a request); outermost, so that every
    answer, the body limit's 413 and the router's 404 and 405 included, carries the header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        header = (HEADER, request_id.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = current_request_id.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            current_request_id.reset(token)
