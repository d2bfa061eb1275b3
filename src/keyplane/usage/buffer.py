"""Buffered usage metering: counts gather in memory and reach the database in batches.

A request costs a dictionary update, not a database write. The flusher writes every
`interval` seconds (default 1) and once more on graceful shutdown (SIGTERM), so a reader on
another worker lags by at most one interval, and a crash loses at most one interval of counts.
Readers in this process see their own pending counts at once (`with_pending`, `pending_buckets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TypeVar

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from keyplane.db import placeholder
from keyplane.models import ApiKey
from keyplane.models.activity import ActivityKind
from keyplane.models.base import new_id
from keyplane.models.idempotency import REPLAY_WINDOW

logger = logging.getLogger(__name__)
PRUNE_EVERY = timedelta(hours=1)
STOP_WAIT_SECONDS = 10.0
R = TypeVar("R")


class Refusal(StrEnum):
    UNAUTHORIZED = "unauthorized"  # HTTP 401: the key exists but is revoked or expired
    FORBIDDEN = "forbidden"  # a FORBIDDEN error in an admitted request
    RATE_LIMITED = "rate_limited"  # HTTP 429


@dataclass
class Counts:
    requests: int = 0
    unauthorized: int = 0
    forbidden: int = 0
    rate_limited: int = 0
    # Of the `forbidden`, those refused for the client's address (KEY_IP_DENIED in the
    # activity log; not a column of usage_bucket).
    ip_denied: int = 0

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.unauthorized += other.unauthorized
        self.forbidden += other.forbidden
        self.rate_limited += other.rate_limited
        self.ip_denied += other.ip_denied

    @property
    def refused(self) -> int:
        return self.unauthorized + self.forbidden + self.rate_limited


@dataclass(frozen=True, slots=True)
class RefusedKey:
    project_id: str
    prefix: str
    name: str


def latest(first: datetime | None, second: datetime | None) -> datetime | None:
    """The later of two instants, either of which may be missing."""
    if first is None or (second is not None and second > first):
        return second
    return first


@dataclass
class KeyTotal:
    requests: int = 0
    last_used_at: datetime | None = None

    def add(self, requests: int, last_used_at: datetime | None) -> None:
        self.requests += requests
        self.last_used_at = latest(self.last_used_at, last_used_at)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class _Pending:
    totals: dict[str, KeyTotal] = field(default_factory=lambda: defaultdict(KeyTotal))
    buckets: dict[tuple[str, str, datetime], Counts] = field(
        default_factory=lambda: defaultdict(Counts)
    )
    # The last client address behind each (key, minute)'s refusals, for the activity log.
    refusal_ips: dict[tuple[str, datetime], str] = field(default_factory=dict)
    # What the activity log needs to name a refused key, taken when it was refused, so the
    # event survives the key's deletion before the next flush.
    refused_keys: dict[str, RefusedKey] = field(default_factory=dict)
    # When each (key, scope) last admitted a field (`Access.require`), for ApiKey.scopesUsed.
    scope_uses: dict[tuple[str, str], datetime] = field(default_factory=dict)


class UsageBuffer:
    def __init__(
        self,
        database_url: str,
        *,
        interval: float = 1.0,
        retention: timedelta = timedelta(days=30),
        activity_retention: timedelta = timedelta(days=90),
    ) -> None:
        self._p = placeholder(database_url)
        self.interval = interval
        self.retention = retention
        self.activity_retention = activity_retention
        self._pending = _Pending()
        self._flushing: _Pending | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._last_prune: datetime | None = None
        # Writes begun so far: a read of stored counters that no write overlapped agrees with
        # the pending counts (`with_pending`).
        self._writes = 0

    # -- recording (hot path: no I/O) ------------------------------------------------------

    def admitted(self, key_id: str, environment_id: str, at: datetime) -> None:
        self._pending.totals[key_id].add(1, at)
        self._pending.buckets[(key_id, environment_id, minute_of(at))].requests += 1

    def scope_used(self, key_id: str, scope: str, at: datetime) -> None:
        self._pending.scope_uses[(key_id, scope)] = at

    def refused(
        self,
        key_id: str,
        environment_id: str,
        at: datetime,
        reason: Refusal,
        *,
        ip: str | None = None,
        key: RefusedKey | None = None,
    ) -> None:
        minute = minute_of(at)
        counts = self._pending.buckets[(key_id, environment_id, minute)]
        setattr(counts, reason.value, getattr(counts, reason.value) + 1)
        if ip is not None:
            self._pending.refusal_ips[(key_id, minute)] = ip
        if key is not None:
            self._pending.refused_keys[key_id] = key

    def ip_denied(
        self, key_id: str, environment_id: str, at: datetime, *, ip: str, key: RefusedKey
    ) -> None:
        """A FORBIDDEN for the client's address: counted as a refusal, and logged as one
        KEY_IP_DENIED event per key and minute, its count growing."""
        self.refused(key_id, environment_id, at, Refusal.FORBIDDEN, ip=ip, key=key)
        self._pending.buckets[(key_id, environment_id, minute_of(at))].ip_denied += 1

    # -- reading what is not flushed yet -----------------------------------------------------

    def pending_key_count(self) -> int:
        return len(self._pending.totals)

    def _unwritten(self) -> list[_Pending]:
        # Counts being written stay visible until their transaction has committed.
        return [self._pending] if self._flushing is None else [self._pending, self._flushing]

    async def with_pending(
        self, read: Callable[[], Awaitable[R]], key_ids: Callable[[R], Iterable[str]]
    ) -> tuple[R, dict[str, KeyTotal]]:
        """`read()` of the stored counters of some keys (`key_ids` of what it read), and what
        this process counted for them and has not committed, as of one moment: each flush is
        in one or the other, once.

        A flush's commit can be seen by other connections before this process learns that it
        committed, so a read that overlapped a write may or may not hold its counts. Such a
        read is done again with flushes held off (rare: a write takes milliseconds a second).
        """
        writes = self._writes
        if self._flushing is None:
            stored = await read()
            if self._writes == writes:  # no write began since: none is in `stored`
                return stored, self._pending_of(key_ids(stored))
        async with self._flush_lock:
            stored = await read()
            return stored, self._pending_of(key_ids(stored))

    def _pending_of(self, key_ids: Iterable[str]) -> dict[str, KeyTotal]:
        # Called with no write in progress: every unwritten count is in `_pending`.
        totals = self._pending.totals
        return {
            key_id: KeyTotal(total.requests, total.last_used_at)
            for key_id in key_ids
            if (total := totals.get(key_id)) is not None
        }

    def pending_scope_uses(self, key_id: str) -> dict[str, datetime]:
        """The scopes this process saw `key_id` use and has not committed, with when."""
        found: dict[str, datetime] = {}
        for pending in self._unwritten():
            for (k, scope), at in pending.scope_uses.items():
                if k == key_id:
                    found[scope] = max(at, found.get(scope, at))
        return found

    def pending_buckets(
        self, *, key_id: str | None = None, environment_id: str | None = None
    ) -> list[tuple[datetime, Counts]]:
        return [
            (minute, counts)
            for pending in self._unwritten()
            for (k, env, minute), counts in pending.buckets.items()
            if (key_id is None or k == key_id) and (environment_id is None or env == environment_id)
        ]

    # -- flushing ----------------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="keyplane-usage-flusher")

    async def stop(self) -> None:
        """Let the flusher finish the write it is in (never cancel a transaction half-way),
        then write what is left."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(self._task, timeout=STOP_WAIT_SECONDS)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=self.interval)
            if self._stopping.is_set():
                return
            try:
                await self.flush()
            except Exception:  # keep the flusher alive; the counts stay buffered
                logger.exception("usage flush failed; retrying in %.1f s", self.interval)
            now = datetime.now(UTC)
            if self._last_prune is None or now - self._last_prune >= PRUNE_EVERY:
                self._last_prune = now
                try:
                    await self.prune(now)
                except Exception:
                    logger.exception("pruning old usage buckets failed")

    async def flush(self) -> None:
        async with self._flush_lock:
            taken, self._pending = self._pending, _Pending()
            if not taken.totals and not taken.buckets and not taken.scope_uses:
                return
            self._flushing = taken
            self._writes += 1
            try:
                await self._write(taken)
            except BaseException:
                self._merge_back(taken)
                raise
            finally:
                self._flushing = None

    def _merge_back(self, taken: _Pending) -> None:
        for key_id, total in taken.totals.items():
            self._pending.totals[key_id].add(total.requests, total.last_used_at)
        for bucket, counts in taken.buckets.items():
            self._pending.buckets[bucket].add(counts)
        for where, ip in taken.refusal_ips.items():
            self._pending.refusal_ips.setdefault(where, ip)
        for key_id, known in taken.refused_keys.items():
            self._pending.refused_keys.setdefault(key_id, known)
        for use, at in taken.scope_uses.items():
            self._pending.scope_uses[use] = max(at, self._pending.scope_uses.get(use, at))

    async def _write(self, taken: _Pending) -> None:
        """One statement per kind of row, each run over all its rows at once (executemany):
        a flush after a second of 100 keys' traffic is three database calls, not three
        hundred."""
        p = self._p
        async with in_transaction() as connection:
            if taken.totals:
                await connection.execute_many(
                    "UPDATE api_key SET total_requests = total_requests + "
                    f"{p(1)}, last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < "
                    f"{p(2)} THEN {p(3)} ELSE last_used_at END WHERE id = {p(4)}",
                    [
                        [total.requests, total.last_used_at, total.last_used_at, key_id]
                        for key_id, total in taken.totals.items()
                    ],
                )
            if taken.buckets:
                await connection.execute_many(
                    "INSERT INTO usage_bucket (key_id, environment_id, minute, requests, "
                    "unauthorized, forbidden, rate_limited) VALUES "
                    f"({p(1)}, {p(2)}, {p(3)}, {p(4)}, {p(5)}, {p(6)}, {p(7)}) "
                    "ON CONFLICT (key_id, minute) DO UPDATE SET "
                    "requests = usage_bucket.requests + excluded.requests, "
                    "unauthorized = usage_bucket.unauthorized + excluded.unauthorized, "
                    "forbidden = usage_bucket.forbidden + excluded.forbidden, "
                    "rate_limited = usage_bucket.rate_limited + excluded.rate_limited",
                    [
                        [
                            key_id,
                            environment_id,
                            minute,
                            c.requests,
                            c.unauthorized,
                            c.forbidden,
                            c.rate_limited,
                        ]
                        for (key_id, environment_id, minute), c in taken.buckets.items()
                    ],
                )
            await self._write_scope_uses(connection, taken)
            await self._write_events(connection, taken)

    async def _write_scope_uses(self, connection: BaseDBAsyncClient, taken: _Pending) -> None:
        if not taken.scope_uses:
            return
        p = self._p
        # Only keys that still exist: one deleted since is skipped, not a foreign-key failure.
        # (The WHERE also settles SQLite's INSERT ... SELECT ... ON CONFLICT parsing.)
        await connection.execute_many(
            "INSERT INTO api_key_scope_use (key_id, scope, last_used_at) "
            f"SELECT {p(1)}, {p(2)}, {p(3)} "
            f"WHERE EXISTS (SELECT 1 FROM api_key WHERE id = {p(4)}) "
            "ON CONFLICT (key_id, scope) DO UPDATE SET "
            "last_used_at = CASE WHEN api_key_scope_use.last_used_at < excluded.last_used_at "
            "THEN excluded.last_used_at ELSE api_key_scope_use.last_used_at END",
            [[key_id, scope, at, key_id] for (key_id, scope), at in taken.scope_uses.items()],
        )

    async def _write_events(self, connection: BaseDBAsyncClient, taken: _Pending) -> None:
        """AUTH_FAILED, RATE_LIMITED and KEY_IP_DENIED in the activity log: one row per key
        and minute, its count growing, instead of one row per refused request."""
        refused = [
            (key_id, minute, counts)
            for (key_id, _, minute), counts in taken.buckets.items()
            if counts.unauthorized or counts.rate_limited or counts.ip_denied
        ]
        if not refused:
            return
        keys = dict(taken.refused_keys)
        unknown = {k for k, _, _ in refused if k not in keys}
        if unknown:
            rows = await ApiKey.filter(id__in=unknown).values("id", "project_id", "prefix", "name")
            keys.update(
                (row["id"], RefusedKey(row["project_id"], row["prefix"], row["name"]))
                for row in rows
            )
        environments = {key_id: env for key_id, env, _ in taken.buckets}
        p = self._p
        for key_id, minute, counts in refused:
            key = keys.get(key_id)
            if key is None:  # deleted, and never described
                continue
            target = f"key:{key_id} ({key.prefix}) {key.name}"[:255]
            ip = taken.refusal_ips.get((key_id, minute))
            for kind, count, actor in (
                (ActivityKind.AUTH_FAILED, counts.unauthorized, "anonymous"),
                (ActivityKind.RATE_LIMITED, counts.rate_limited, f"key:{key_id}"),
                (ActivityKind.KEY_IP_DENIED, counts.ip_denied, f"key:{key_id}"),
            ):
                if not count:
                    continue
                await connection.execute_query(
                    "INSERT INTO activity_event (id, project_id, environment_id, kind, at, actor, "
                    "target, ip, count, aggregate_key) VALUES "
                    f"({p(1)}, {p(2)}, {p(3)}, {p(4)}, {p(5)}, {p(6)}, {p(7)}, {p(8)}, {p(9)}, "
                    f"{p(10)}) ON CONFLICT (aggregate_key) DO UPDATE SET "
                    "count = activity_event.count + excluded.count, "
                    "ip = COALESCE(excluded.ip, activity_event.ip)",
                    [
                        new_id("evt"),
                        key.project_id,
                        environments[key_id],
                        kind.value,
                        minute,
                        actor,
                        target,
                        ip,
                        count,
                        f"{kind.value}:{key_id}:{minute.isoformat()}",
                    ],
                )

    async def prune(self, now: datetime) -> int:
        """Delete usage buckets and activity events past their retention, and idempotency keys
        past their replay window; returns how many."""
        p = self._p
        connection = connections.get("default")
        usage_count, _ = await connection.execute_query(
            f"DELETE FROM usage_bucket WHERE minute < {p(1)}", [minute_of(now - self.retention)]
        )
        activity_count, _ = await connection.execute_query(
            f"DELETE FROM activity_event WHERE at < {p(1)}", [now - self.activity_retention]
        )
        # Idempotency keys past their replay window are ignored already; this frees the rows.
        idempotency_count, _ = await connection.execute_query(
            f"DELETE FROM idempotency WHERE created_at <= {p(1)}", [now - REPLAY_WINDOW]
        )
        return int(usage_count) + int(activity_count) + int(idempotency_count)
