"""Browser pages on other origins (KEYPLANE_CORS_ORIGINS): Starlette's CORSMiddleware, outermost.

Outermost, so that it answers a preflight before anything else sees it (a preflight carries no
credentials: it is never authenticated, charged to a rate-limit bucket, counted in flight or
refused as not a POST), and so that its headers go on every answer, the refusals included
(edge.py's 503 and 413, the 401 of refused credentials, the 429): a page can read a 429's
`Retry-After` only from an answer that lets it.

Origins are listed exactly; no `*` (settings.py refuses it) and no credentials mode: callers
authenticate with the `Authorization` header, never with cookies. With no origins listed the
layer is not there at all, and answers carry no CORS header.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

ALLOWED_METHODS = ("POST", "GET")
# What the app reads from a request (besides the headers every page may send: Accept,
# Content-Type...): the credential, and a request id the page may set for its own logs.
ALLOWED_HEADERS = ("authorization", "content-type", "x-request-id")
# What a page may read of an answer, beyond the few headers every page may: the rate-limit
# headers (ratelimit/headers.py), `Retry-After` (429 and 503) and the request id.
EXPOSED_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "x-request-id",
)
# How long a browser may reuse a preflight's answer (Chromium keeps it two hours at most).
MAX_AGE_SECONDS = 3600


def cors_middleware(origins: Sequence[str]) -> list[Middleware]:
    """The CORS layer for these origins, or none when none are listed."""
    if not origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=tuple(origins),
            allow_methods=ALLOWED_METHODS,
            allow_headers=ALLOWED_HEADERS,
            expose_headers=EXPOSED_HEADERS,
            max_age=MAX_AGE_SECONDS,
        )
    ]
