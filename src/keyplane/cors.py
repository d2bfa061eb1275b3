"""Browser pages on other origins (KEYPLANE_CORS_ORIGINS), answered in edge.py's layer.

edge.py is outermost, so a preflight is answered before anything else sees it (a preflight
carries no credentials: it is never authenticated, charged to a rate-limit bucket, counted in
flight or refused as not a POST), and the CORS headers go on every answer, the refusals
included (edge.py's own 503 and 413, the 401 of refused credentials, the 429): a page can read
a 429's `Retry-After` only from an answer that lets it.

Starlette's CORSMiddleware answers the preflights (its `preflight_response`: the checks of
the origin, the method and the requested headers; tests/test_cors.py holds its answers). As a
layer of its own it parses and rewrites the headers of every answer, even to requests with no
`Origin` (about 25 µs a request): a keyed `viewer` query went from 1,063k instructions to
1,137k without an `Origin` and 1,119k with a listed one (5-7 %). The answers' headers are
therefore made once here and appended as they are: 1,072k -> 1,075k and 1,071k, within the
~3 % a sample moves (bench/instructions.py --cors-origin [--send-origin], 2026-12-02).

Origins are listed exactly; no `*` (settings.py refuses it) and no credentials mode: callers
authenticate with the `Authorization` header, never with cookies. With no origins listed,
nothing here runs and answers carry no CORS header.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import Scope

ALLOWED_METHODS = ("POST", "GET")
# What the app reads from a request (besides the headers every page may send: Accept,
# Content-Type...): the credential, and a request id the page may set for its own logs.
ALLOWED_HEADERS = ("authorization", "content-type", "x-request-id")
# What a page may read of an answer, beyond the few headers every page may: the rate-limit
# headers (ratelimit/headers.py), `Retry-After` (429 and 503) and the request id. Names are
# case-insensitive; they are listed as the README and the headers' own specifications spell
# them, so that a client comparing the text as written finds them.
EXPOSED_HEADERS = (
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "RateLimit",
    "RateLimit-Policy",
    "Retry-After",
    "X-Request-Id",
)
# How long a browser may reuse a preflight's answer (Chromium keeps it two hours at most).
MAX_AGE_SECONDS = 3600

RawHeaders = tuple[tuple[bytes, bytes], ...]
# An answer depends on the request's Origin: caches must keep one per origin, even the
# answers to requests without one.
VARY: RawHeaders = ((b"vary", b"Origin"),)


class Cors:
    """What to add to each answer, and the answers to preflights, for the listed origins."""

    def __init__(self, origins: Sequence[str]) -> None:
        exposed = (b"access-control-expose-headers", ", ".join(EXPOSED_HEADERS).encode())
        self.allowed: dict[bytes, RawHeaders] = {
            origin.encode("latin-1"): (
                (b"access-control-allow-origin", origin.encode("latin-1")),
                exposed,
                *VARY,
            )
            for origin in origins
        }

        async def unused(scope: Scope, receive: object, send: object) -> None:
            raise AssertionError("only its preflight answers are used")

        self.preflights = CORSMiddleware(
            unused,
            allow_origins=tuple(origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )

    def answer_headers(self, origin: bytes | None) -> RawHeaders:
        """The headers an answer to a request from `origin` carries (a listed one is echoed)."""
        if origin is None:
            return VARY
        return self.allowed.get(origin, VARY)

    def preflight(self, scope: Scope) -> Response | None:
        """The answer to a preflight (200, or 400 naming what is not allowed), or None when the
        request is no preflight. Called for OPTIONS requests that carry an Origin."""
        headers = Headers(scope=scope)
        if "access-control-request-method" not in headers:
            return None
        return self.preflights.preflight_response(request_headers=headers)


def origin_of(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:  # ASGI header names are lower-case bytes
        if name == b"origin":
            return value
    return None
