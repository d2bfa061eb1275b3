"""The credentials' version: how every worker learns, before its next request, that a key or a
session changed.

Each process keeps the keys and sessions it verified in memory (auth/verified.py). An entry is
used only while the version it was read under is still current, and every change that can end or
narrow a credential (revoke, rotate, update or delete a key; log out; change or remove a member,
which narrows the keys that member created) moves the version on once its transaction has
committed, before its response is sent. So a request that starts after that response, on any
worker or host, reads a new version and looks the credential up again. Such writes run in
`VerifiedCredentials.change()` (auth/verified.py), the transaction that moves the version once
it has committed, so no writer can forget to.

Reading the version is the one synchronous check a cached request pays; it must cost less than
the lookup it saves. Where the version lives follows from who can share the database:

- SQLite in memory: this process alone; a counter in memory.
- SQLite in a file: only processes on this host can open it; 8 bytes in a memory-mapped file
  beside the database (about a microsecond to read, against ~35 µs and a thread hop for the
  lookup).
- PostgreSQL with a Redis URL (KEYPLANE_RATE_LIMIT_STORAGE): a Redis key, read in the rate
  limiter's round trip (below; a GET of its own cost ~170 µs, against ~360 µs for the lookup
  through Tortoise, measured side by side).
- PostgreSQL without Redis: hosts share nothing cheaper than the lookup itself, so nothing is
  cached and every request reads its row.

If the version cannot be read (Redis down), the cache is bypassed: the request reads its row.

With Redis, the version is not read with a GET of its own: the rate limiter reads it in the
same round trip as the request's moving window (ratelimit/redis_window.py), so a keyed request
costs one round trip. Authentication comes first in the request path, so it trusts a kept
entry under the version this worker saw last (`assumed()`) and the principal carries that
version; the limiter's script compares it with the version in Redis before it charges
anything. Equal: the entry was current when the request was charged, exactly as if the
version had been read first. Different: nothing is charged, the credential is verified again
under the version the script read (read before that lookup, as above) and only then charged,
to the bucket of the principal it now is; a credential refused then answers 401, charged to
the client IP's anonymous bucket like any refusal, and the key's bucket is never charged.
Refusals are never re-checked: every refusal is final (a revoked key, an ended session, an
expired credential, a secret no key has: new secrets are random). So revocation still holds
from the next request on every worker: that request's round trip reads the moved version.
If the round trip fails, the credential is verified again with the cache bypassed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import mmap
import os
import time
from pathlib import Path
from typing import Protocol

from keyplane.db import PRIVATE_FILE_MODE, is_postgres, sqlite_path

logger = logging.getLogger(__name__)
REDIS_KEY = "keyplane:credentials:version"
_WIDTH = 8
BREAKER_SECONDS = 2.0


class CredentialVersion(Protocol):
    async def current(self) -> int | None:
        """The version now; None when it cannot be known (the cache is then bypassed)."""

    def assumed(self) -> int | None:
        """The version seen last, when the request's own round trip will confirm it before
        anything is charged (see above); None: read `current()`."""

    async def advance(self) -> None:
        """Move the version on: every entry read under an older one is stale everywhere."""

    async def close(self) -> None: ...


class LocalVersion:
    """One process owns the database (SQLite in memory): a counter in memory is enough."""

    def __init__(self) -> None:
        self._value = 0

    async def current(self) -> int | None:
        return self._value

    def assumed(self) -> int | None:
        return None

    async def advance(self) -> None:
        self._value += 1

    async def close(self) -> None:
        return None


class FileVersion:
    """A counter in a memory-mapped file next to the SQLite database, shared by every process
    that opens that database (they are all on this host: SQLite files are not shared over a
    network). Writers increment it under an exclusive file lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.fstat(fd).st_size < _WIDTH:
                    os.ftruncate(fd, _WIDTH)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            self._map = mmap.mmap(fd, _WIDTH, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._path = path

    def read(self) -> int:
        return int.from_bytes(self._map[:_WIDTH], "little")

    async def current(self) -> int | None:
        return self.read()

    def assumed(self) -> int | None:
        return None

    async def advance(self) -> None:
        fd = os.open(self._path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                value = (self.read() + 1) % (1 << 63)
                self._map[:_WIDTH] = value.to_bytes(_WIDTH, "little")
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def close(self) -> None:
        with contextlib.suppress(BufferError):
            self._map.close()


class RedisVersion:
    """A counter in Redis, shared by every worker and host using that Redis."""

    key = REDIS_KEY

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis

        self._client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        self._down_until = 0.0
        self._seen: int | None = None
        # Set by the rate limiter when its round trip reads the version (Limiter.start).
        self.confirmed_by_limiter = False

    async def current(self) -> int | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            value = await self._client.get(REDIS_KEY)
        except Exception as exc:  # any driver error: bypass the cache for a while
            self.unknown()
            logger.warning("credential version unreadable, cache bypassed: %r", exc)
            return None
        version = int(value) if value is not None else 0
        self.seen(version)
        return version

    def assumed(self) -> int | None:
        if not self.confirmed_by_limiter or time.monotonic() < self._down_until:
            return None
        return self._seen

    def seen(self, version: int) -> None:
        """A round trip read `version`: it only moves forward (INCR)."""
        if self._seen is None or version > self._seen:
            self._seen = version

    def unknown(self) -> None:
        """Redis failed: bypass the cache for a while."""
        self._down_until = time.monotonic() + BREAKER_SECONDS

    async def advance(self) -> None:
        self.seen(int(await self._client.incr(REDIS_KEY)))

    async def close(self) -> None:
        await self._client.aclose()


class NoVersion:
    """Nothing cheaper than the lookup is shared: every request reads its credential."""

    async def current(self) -> int | None:
        return None

    def assumed(self) -> int | None:
        return None

    async def advance(self) -> None:
        return None

    async def close(self) -> None:
        return None


def credential_version(database_url: str, rate_limit_storage: str) -> CredentialVersion:
    if is_postgres(database_url):
        url = rate_limit_storage.removeprefix("async+")
        if url.startswith(("redis://", "rediss://")):
            return RedisVersion(url)
        return NoVersion()
    path = sqlite_path(database_url)
    if path is None:
        return LocalVersion()
    return FileVersion(path.with_name(path.name + ".credentials"))
