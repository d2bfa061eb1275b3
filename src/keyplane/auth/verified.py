"""A bounded memo of tokens whose signature and claims were already verified.

Verifying a JWT costs tens of microseconds (an ES256 signature more); the result cannot change
before the token's `exp`, so it is kept until then. What can change (a session ended by logOut,
a key revoked, a key's creator demoted or removed) is kept in VerifiedCredentials, under the
credentials' version (auth/changes.py).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from keyplane.auth.changes import CredentialVersion, NoVersion
from keyplane.auth.principal import Principal
from keyplane.records import KeyRecord, MemberRecord

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ENTRIES = 10_000
# Each entry is trusted for between (1 - AGE_SPREAD) and 1 times the longest reuse, drawn when
# it is kept: keys first seen together (a server's first seconds, a client's fleet starting)
# would otherwise all be read again in one instant, each read a database query on that
# instant's requests (bench/results/overload.md: 180 requests 350 ms late at once).
AGE_SPREAD = 0.2


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


@dataclass(slots=True)
class _Fresh(Generic[T]):
    value: T
    version: int
    born: float


class FreshEntries(Generic[T]):
    """Values read from the database, kept while the credentials' version they were read under
    is current and they are younger than `max_age` seconds."""

    def __init__(self, max_age: float, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[str, _Fresh[T]] = {}
        self._max_age = max_age
        self._max = max_entries
        self._spread = max_age * AGE_SPREAD

    def get(self, key: str, version: int) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.version != version or time.monotonic() - entry.born >= self._max_age:
            del self._entries[key]
            return None
        return entry.value

    def put(self, key: str, value: T, version: int) -> None:
        if self._max_age <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest insertion
        # Stamped up to `_spread` seconds early: it leaves a little sooner (see AGE_SPREAD).
        born = time.monotonic() - random.random() * self._spread  # timing only: not a secret
        self._entries[key] = _Fresh(value, version, born)

    def clear(self) -> None:
        self._entries.clear()


class VerifiedCredentials:
    """This process's memory of keys, sessions and OAuth identities it looked up, trusted only
    under the credentials' version they were read with (see auth/changes.py)."""

    def __init__(
        self, version: CredentialVersion, *, max_age: float, max_entries: int = MAX_ENTRIES
    ) -> None:
        """Each kind below keeps at most `max_entries` (KEYPLANE_CREDENTIAL_CACHE_SIZE): past
        that, the oldest insertion goes, so a million keys in use cost bounded memory."""
        self._version = version
        self.keys: FreshEntries[KeyRecord] = FreshEntries(max_age, max_entries)
        # What a live key authenticated as (its scopes narrowed by its creator's membership),
        # by secret hash: a request with a kept key builds nothing (auth/authenticate.py).
        self.key_principals: FreshEntries[Principal] = FreshEntries(max_age, max_entries)
        # Secret hashes no key has, apart from `keys` so that guessed secrets cannot push the
        # real keys out. A new key's secret is random: nobody can have sent it before it was
        # issued, so issuing a key need not clear these.
        self.unknown_keys: FreshEntries[bool] = FreshEntries(max_age, max_entries)
        self.sessions: FreshEntries[datetime] = FreshEntries(max_age, max_entries)
        self.identities: FreshEntries[str] = FreshEntries(max_age, max_entries)
        # A key's creator's membership of the key's project (`project_id user_id`): a key
        # may do no more than its creator may now do there (auth/authenticate.py). A person's
        # own membership, read by `Access`, is the same row and is kept here too.
        self.creators: FreshEntries[MemberRecord] = FreshEntries(max_age, max_entries)
        self.non_members: FreshEntries[bool] = FreshEntries(max_age, max_entries)
        self.enabled = max_age > 0 and not isinstance(version, NoVersion)
        self.change_failures = 0
        # Loads in progress that later askers of the same entry wait for (`shared` loads).
        self._loading: dict[tuple[int, str, int], asyncio.Future[Any]] = {}

    async def version(self) -> int | None:
        if not self.enabled:
            return None
        return await self._version.current()

    async def request_version(self) -> tuple[int | None, bool]:
        """The version a request trusts kept entries under, and whether it was read now (True)
        or is the one seen last, which the request's rate-limit round trip confirms before
        anything is charged (False; auth/changes.py)."""
        if not self.enabled:
            return None, True
        assumed = self._version.assumed()
        if assumed is not None:
            return assumed, False
        return await self._version.current(), True

    async def through(
        self,
        entries: FreshEntries[T],
        key: str,
        load: Callable[[], Awaitable[T | None]],
        *,
        absent: FreshEntries[bool] | None = None,
    ) -> T | None:
        """The kept value if it is still trusted, else `load()`'s, kept; with `absent`, that
        `load()` found nothing is kept there too, under the same rules.

        The version is read before the load: a change committed during the load moves it on,
        so what the load read is never trusted past that change."""
        return await self.through_at(await self.version(), entries, key, load, absent=absent)

    async def through_at(
        self,
        version: int | None,
        entries: FreshEntries[T],
        key: str,
        load: Callable[[], Awaitable[T | None]],
        *,
        absent: FreshEntries[bool] | None = None,
        shared: bool = False,
    ) -> T | None:
        """`through` under a version the caller read (before any of its loads), so that
        several lookups of one request cost one read of the version.

        `shared`: requests that ask for the same entry while it is being loaded wait for that
        one load instead of each making their own (a busy key that has to be read again is read
        once, not once per request in flight). Only for loads that read no request's own state:
        authentication, before any resolver and outside any transaction (the load runs in the
        first asker's context). A waiter that goes away leaves the load to the others."""
        if version is not None:
            kept = entries.get(key, version)
            if kept is not None:
                return kept
            if absent is not None and absent.get(key, version):
                return None
            if shared:
                flight = (id(entries), key, version)
                loading = self._loading.get(flight)
                if loading is None:
                    loading = asyncio.ensure_future(
                        self._load(version, entries, key, load, absent=absent)
                    )
                    self._loading[flight] = loading
                    loading.add_done_callback(partial(self._landed, flight))
                try:
                    value: T | None = await asyncio.shield(loading)
                finally:
                    # A failed load's error holds its traceback, which holds this frame: this
                    # frame must not hold the load (and so the error) back, or every refused
                    # key leaves a reference cycle for the garbage collector.
                    del loading
                return value
        return await self._load(version, entries, key, load, absent=absent)

    def _landed(self, flight: tuple[int, str, int], loading: asyncio.Future[Any]) -> None:
        self._loading.pop(flight, None)
        if not loading.cancelled():
            loading.exception()  # seen, even if every asker went away before it ended

    async def _load(
        self,
        version: int | None,
        entries: FreshEntries[T],
        key: str,
        load: Callable[[], Awaitable[T | None]],
        *,
        absent: FreshEntries[bool] | None,
    ) -> T | None:
        value = await load()
        if version is not None:
            if value is None:
                if absent is not None:
                    absent.put(key, True, version)
            else:
                entries.put(key, value, version)
        return value

    @asynccontextmanager
    async def change(self) -> AsyncIterator[BaseDBAsyncClient]:
        """The one transaction of a write that can end, narrow or widen a credential (a key, a
        session, a membership): once it has committed, the credentials' version moves on, so
        that no writer can forget to. A write that fails rolls back and moves nothing."""
        async with in_transaction() as connection:
            yield connection
        await self._changed()

    async def _changed(self) -> None:
        """A key, a session or a membership changed and its transaction committed: forget it
        here, and move the shared version on so that every other worker forgets it before its
        next request."""
        self.keys.clear()
        self.key_principals.clear()
        self.unknown_keys.clear()
        self.sessions.clear()
        self.identities.clear()
        self.creators.clear()
        self.non_members.clear()
        if not self.enabled:
            return
        try:
            await self._version.advance()
        except Exception as exc:  # the change stands; other workers' entries age out
            self.change_failures += 1
            logger.error("could not advance the credentials' version: %r", exc)

    async def close(self) -> None:
        await self._version.close()
