"""The request-body limit: Starlette's, skipped when the declared length already fits (edge.py).

The HTTP server frames a body by its Content-Length: an application is never handed more bytes
than the request declared. A request declaring one length within the limit, and no chunked
encoding, therefore cannot exceed it, and goes straight on: Starlette's responder (an object,
two wrapped channels and a header parse per request) cost 30k instructions of 1.27M on a keyed
`viewer` query (bench/instructions.py). Every other request (a length over the limit, a chunked
body, a missing, repeated or malformed length) goes through Starlette's middleware.
"""

from __future__ import annotations

MAX_BODY_BYTES = 2 * 1024 * 1024


def declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body length the request declares, if it declares exactly one and no chunking."""
    length = None
    for name, value in headers:  # ASGI header names are lower-case bytes
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None
    return length
