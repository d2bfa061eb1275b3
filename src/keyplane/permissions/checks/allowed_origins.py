"""Built-in check: a key with `allowedOrigins` (a browser key) is refused for any other
`Origin`, and when the request sends none, as referrer-restricted keys are elsewhere."""

from __future__ import annotations

from typing import ClassVar

from keyplane.errors import Forbidden
from keyplane.permissions.checks import CheckRequest

MAX_ORIGINS = 50


class AllowedOrigins:
    name: ClassVar[str] = "allowed_origins"
    about_request: ClassVar[bool] = True
    restricted_keys_only: ClassVar[bool] = True

    async def __call__(self, request: CheckRequest) -> None:
        allowed = request.restrictions.allowed_origins
        if not allowed:
            return
        origin = request.origin
        if origin is None:
            raise Forbidden("This key is for browsers: the request has no Origin header.")
        if origin.lower().rstrip("/") not in allowed:
            raise Forbidden(f"This key may not be used from the origin {origin}.")


def stored_origins(values: list[str]) -> str:
    """`allowedOrigins` as given, checked (`https://host[:port]`, no path) and stored."""
    from urllib.parse import urlsplit

    from keyplane.errors import BadUserInput

    if len(values) > MAX_ORIGINS:
        raise BadUserInput(f"At most {MAX_ORIGINS} origins.", field="allowedOrigins")
    origins: list[str] = []
    for value in values:
        origin = value.strip().lower().rstrip("/")
        try:
            parts = urlsplit(origin)
            parts.port  # noqa: B018  (raises on a port that is not a number)
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path
            or parts.query
            or parts.fragment
            or parts.username is not None
            or "," in origin
        ):
            raise BadUserInput(
                f"{value!r} is not an origin such as https://app.example.com.",
                field="allowedOrigins",
            )
        if origin not in origins:
            origins.append(origin)
    return ",".join(origins)
