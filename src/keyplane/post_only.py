"""Production's GraphQL transport: JSON bodies sent with POST, nothing else.

A GET query is a query anyone can make a browser send (a link, an image), and a form or a
`text/plain` body is one that a cross-site page can POST without a CORS preflight. Both are
refused before the caller is even authenticated: nothing runs, and the answer says what to send.
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from keyplane.errors import KeyplaneError, MethodNotAllowed, UnsupportedMediaType

JSON_MEDIA_TYPE = b"application/json"


def media_type_of(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:  # ASGI header names are lower-case bytes
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return None


def refusal(
    error: KeyplaneError, status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"errors": [{"message": error.message, "extensions": error.extensions}]}
    return JSONResponse(body, status, headers=headers)


class PostOnly:
    """405 with `Allow: POST` for every other method, 415 for a POST whose body is not JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] != "POST":
                response = refusal(MethodNotAllowed(), 405, {"Allow": "POST"})
                await response(scope, receive, send)
                return
            if media_type_of(scope["headers"]) != JSON_MEDIA_TYPE:
                await refusal(UnsupportedMediaType(), 415)(scope, receive, send)
                return
        await self.app(scope, receive, send)
