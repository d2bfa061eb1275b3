"""A bounded memo of tokens whose signature and claims were already verified.

Verifying a JWT costs tens of microseconds (an ES256 signature more); the result cannot change
before the token's `exp`, so it is kept until then. What can change (a session ended by logOut,
a key revoked, a key's creator demoted or removed) is kept in VerifiedCredentials, under the
credentials' version (auth/changes.py).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Generic, TypeVar

from keyplane.auth.changes import CredentialVersion, NoVersion
from keyplane.records import KeyRecord, MemberRecord
from keyplane.usage.buffer import KeyTotal, latest

logger = logging.getLogger(__name__)

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


@dataclass(slots=True)
class _Fresh(Generic[T]):
    value: T
    version: int
    stamp: int
    born: float


class FreshEntries(Generic[T]):
    """Values read from the database, kept while the credentials' version they were read under
    is current, their stamp unchanged and they are younger than `max_age` seconds."""

    def __init__(self, max_age: float, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: dict[str, _Fresh[T]] = {}
        self._max_age = max_age
        self._max = max_entries

    def get(self, key: str, version: int, stamp: int = 0) -> T | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if (
            entry.version != version
            or entry.stamp != stamp
            or time.monotonic() - entry.born >= self._max_age
        ):
            del self._entries[key]
            return None
        return entry.value

    def put(self, key: str, value: T, version: int, stamp: int = 0) -> None:
        if self._max_age <= 0:
            return
        self._entries.pop(key, None)
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest insertion
        self._entries[key] = _Fresh(value, version, stamp, time.monotonic())

    def restamp(self, stamp: int, update: Callable[[T], T]) -> None:
        """Entries read under `stamp` are brought up to date by `update` and carry the next
        stamp; older ones stay as they are (and are dropped when next asked for)."""
        for entry in self._entries.values():
            if entry.stamp == stamp:
                entry.value = update(entry.value)
                entry.stamp = stamp + 1

    def clear(self) -> None:
        self._entries.clear()


def with_counts(record: KeyRecord, total: KeyTotal | None) -> KeyRecord:
    """The row as it is once `total` (a usage flush's counts for this key) has committed."""
    if total is None or not total.requests:
        return record
    return replace(
        record,
        total_requests=record.total_requests + total.requests,
        last_used_at=latest(record.last_used_at, total.last_used_at),
    )


class VerifiedCredentials:
    """This process's memory of keys, sessions and OAuth identities it looked up, trusted only
    under the credentials' version they were read with (see auth/changes.py)."""

    def __init__(self, version: CredentialVersion, *, max_age: float) -> None:
        self._version = version
        self.keys: FreshEntries[KeyRecord] = FreshEntries(max_age)
        # Secret hashes no key has, apart from `keys` so that guessed secrets cannot push the
        # real keys out. A new key's secret is random: nobody can have sent it before it was
        # issued, so issuing a key need not clear these.
        self.unknown_keys: FreshEntries[bool] = FreshEntries(max_age)
        self.sessions: FreshEntries[datetime] = FreshEntries(max_age)
        self.identities: FreshEntries[str] = FreshEntries(max_age)
        # A key's creator's membership of the key's project (`project_id user_id`): a key
        # may do no more than its creator may now do there (auth/authenticate.py).
        self.creators: FreshEntries[MemberRecord] = FreshEntries(max_age)
        self.non_members: FreshEntries[bool] = FreshEntries(max_age)
        self.enabled = max_age > 0 and not isinstance(version, NoVersion)
        self.change_failures = 0

    async def version(self) -> int | None:
        if not self.enabled:
            return None
        return await self._version.current()

    async def through(
        self,
        entries: FreshEntries[T],
        key: str,
        load: Callable[[], Awaitable[T | None]],
        *,
        stamp: int = 0,
        absent: FreshEntries[bool] | None = None,
    ) -> T | None:
        """The kept value if it is still trusted, else `load()`'s, kept; with `absent`, that
        `load()` found nothing is kept there too, under the same rules.

        The version is read before the load: a change committed during the load moves it on,
        so what the load read is never trusted past that change."""
        return await self.through_at(
            await self.version(), entries, key, load, stamp=stamp, absent=absent
        )

    async def through_at(
        self,
        version: int | None,
        entries: FreshEntries[T],
        key: str,
        load: Callable[[], Awaitable[T | None]],
        *,
        stamp: int = 0,
        absent: FreshEntries[bool] | None = None,
    ) -> T | None:
        """`through` under a version the caller read (before any of its loads), so that
        several lookups of one request cost one read of the version."""
        if version is not None:
            kept = entries.get(key, version, stamp)
            if kept is not None:
                return kept
            if absent is not None and absent.get(key, version):
                return None
        value = await load()
        if version is not None:
            if value is None:
                if absent is not None:
                    absent.put(key, True, version)
            else:
                entries.put(key, value, version, stamp)
        return value

    def counted(self, totals: Mapping[str, KeyTotal], stamp: int) -> None:
        """This process's usage flush `stamp` committed `totals`: the keys kept since add them
        to their counters, as the rows now hold them, instead of all being read again."""
        self.keys.restamp(stamp, lambda record: with_counts(record, totals.get(record.id)))

    async def changed(self) -> None:
        """A key, a session or a membership changed and its transaction committed: forget it
        here, and move the shared version on so that every other worker forgets it before its
        next request."""
        self.keys.clear()
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
