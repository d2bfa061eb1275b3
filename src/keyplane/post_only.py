"""Production's GraphQL transport: JSON bodies sent with POST, nothing else.

A GET query is a query anyone can make a browser send (a link, an image), and a form or a
`text/plain` body is one that a cross-site page can POST without a CORS preflight. Both are
refused before the caller is even authenticated: nothing runs, and the answer says what to send.
"""

from __future__ import annotations

from starlette.responses import JSONResponse, Response
from starlette.types import Scope

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


def transport_refusal(scope: Scope) -> Response | None:
    """405 with `Allow: POST` for every other method, 415 for a POST whose body is not JSON;
    None for a JSON POST. The /graphql route's AuthenticationMiddleware asks first, in
    production (one middleware layer less on every request)."""
    if scope["method"] != "POST":
        return refusal(MethodNotAllowed(), 405, {"Allow": "POST"})
    if media_type_of(scope["headers"]) != JSON_MEDIA_TYPE:
        return refusal(UnsupportedMediaType(), 415)
    return None
