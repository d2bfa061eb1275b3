"""A bounded memo of tokens whose signature and claims were already verified.

Verifying a JWT costs tens of microseconds (an ES256 signature more); the result cannot change
before the token's `exp`, so it is kept until then. What can change (a session ended by logOut,
a key revoked) is never cached: it is read from the database on every request.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_ENTRIES = 10_000


class VerifiedTokens(Generic[T]):
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, tuple[T, float]] = OrderedDict()
        self._max = max_entries

    def get(self, token: str) -> T | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        value, expires_at = entry
        if time.time() >= expires_at:
            del self._entries[token]
            return None
        self._entries.move_to_end(token)
        return value

    def put(self, token: str, value: T, expires_at: float) -> None:
        self._entries[token] = (value, expires_at)
        self._entries.move_to_end(token)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
