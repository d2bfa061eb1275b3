"""`X-Request-Id` on every response, and the same id for the error log of the request (edge.py
puts it on the response).

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
    """The caller's own id, when it is short and of safe characters (a proxy's id then follows
    the request through), else a new one."""
    for name, value in headers:  # ASGI header names are lower-case bytes
        if name == HEADER:
            if len(value) <= MAX_INCOMING_LENGTH and _SAFE.fullmatch(value):
                return value.decode("ascii")
            break
    return new_request_id()
