"""Password hashing with argon2, off the event loop, and timing-safe verification."""

from __future__ import annotations

import asyncio
import threading

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 256


# Each argon2 computation holds `memory_cost_kib` (64 MiB by default): at most this many run at
# once, so a burst of logins cannot take hundreds of megabytes.
CONCURRENT_HASHES = 2


class Passwords:
    def __init__(self, *, time_cost: int = 3, memory_cost_kib: int = 65536) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost_kib)
        self._slots = threading.BoundedSemaphore(CONCURRENT_HASHES)
        self._dummy_lock = threading.Lock()
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _hash(self, password: str) -> str:
        with self._slots:
            return self._hasher.hash(password)

    def _dummy(self) -> str:
        # Verified when the account does not exist, so both paths take the same time. Made on
        # first use, not at start-up, where its 64 MiB would set the process's peak memory.
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._hash("keyplane-dummy-password")
            return self._dummy_hash

    def _verify(self, password_hash: str | None, password: str) -> bool:
        stored = password_hash or self._dummy()
        try:
            with self._slots:
                self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        return password_hash is not None
