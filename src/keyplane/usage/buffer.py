"""Buffered usage metering: counts gather in memory and reach the database in batches.

A request costs a dictionary update, not a database write. The flusher writes every
`interval` seconds (default 1) and once more on graceful shutdown (SIGTERM), so a reader on
another worker lags by at most one interval, and a crash loses at most one interval of counts.
Readers in this process see their own pending counts at once (`pending_total`, `pending_buckets`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from tortoise import connections
from tortoise.transactions import in_transaction

from keyplane.db import is_postgres

logger = logging.getLogger(__name__)
PRUNE_EVERY = timedelta(hours=1)


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

    def add(self, other: Counts) -> None:
        self.requests += other.requests
        self.unauthorized += other.unauthorized
        self.forbidden += other.forbidden
        self.rate_limited += other.rate_limited

    @property
    def refused(self) -> int:
        return self.unauthorized + self.forbidden + self.rate_limited


@dataclass
class KeyTotal:
    requests: int = 0
    last_used_at: datetime | None = None


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


@dataclass
class _Pending:
    totals: dict[str, KeyTotal] = field(default_factory=lambda: defaultdict(KeyTotal))
    buckets: dict[tuple[str, str, datetime], Counts] = field(
        default_factory=lambda: defaultdict(Counts)
    )


class UsageBuffer:
    def __init__(
        self,
        database_url: str,
        *,
        interval: float = 1.0,
        retention: timedelta = timedelta(days=30),
    ) -> None:
        self._postgres = is_postgres(database_url)
        self.interval = interval
        self.retention = retention
        self._pending = _Pending()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._last_prune: datetime | None = None

    # -- recording (hot path: no I/O) ------------------------------------------------------

    def admitted(self, key_id: str, environment_id: str, at: datetime) -> None:
        total = self._pending.totals[key_id]
        total.requests += 1
        if total.last_used_at is None or at > total.last_used_at:
            total.last_used_at = at
        self._pending.buckets[(key_id, environment_id, minute_of(at))].requests += 1

    def refused(self, key_id: str, environment_id: str, at: datetime, reason: Refusal) -> None:
        counts = self._pending.buckets[(key_id, environment_id, minute_of(at))]
        setattr(counts, reason.value, getattr(counts, reason.value) + 1)

    # -- reading what is not flushed yet -----------------------------------------------------

    def pending_total(self, key_id: str) -> KeyTotal:
        return self._pending.totals.get(key_id) or KeyTotal()

    def pending_buckets(
        self, *, key_id: str | None = None, environment_id: str | None = None
    ) -> list[tuple[datetime, Counts]]:
        return [
            (minute, counts)
            for (k, env, minute), counts in self._pending.buckets.items()
            if (key_id is None or k == key_id) and (environment_id is None or env == environment_id)
        ]

    # -- flushing ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="keyplane-usage-flusher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
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
            if not taken.totals and not taken.buckets:
                return
            try:
                await self._write(taken)
            except BaseException:
                self._merge_back(taken)
                raise

    def _merge_back(self, taken: _Pending) -> None:
        for key_id, total in taken.totals.items():
            mine = self._pending.totals[key_id]
            mine.requests += total.requests
            if total.last_used_at and (
                mine.last_used_at is None or total.last_used_at > mine.last_used_at
            ):
                mine.last_used_at = total.last_used_at
        for bucket, counts in taken.buckets.items():
            self._pending.buckets[bucket].add(counts)

    async def _write(self, taken: _Pending) -> None:
        p = self._placeholders
        async with in_transaction() as connection:
            for key_id, total in taken.totals.items():
                await connection.execute_query(
                    "UPDATE api_key SET total_requests = total_requests + "
                    f"{p(1)}, last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < "
                    f"{p(2)} THEN {p(3)} ELSE last_used_at END WHERE id = {p(4)}",
                    [total.requests, total.last_used_at, total.last_used_at, key_id],
                )
            for (key_id, environment_id, minute), c in taken.buckets.items():
                await connection.execute_query(
                    "INSERT INTO usage_bucket (key_id, environment_id, minute, requests, "
                    "unauthorized, forbidden, rate_limited) VALUES "
                    f"({p(1)}, {p(2)}, {p(3)}, {p(4)}, {p(5)}, {p(6)}, {p(7)}) "
                    "ON CONFLICT (key_id, minute) DO UPDATE SET "
                    "requests = usage_bucket.requests + excluded.requests, "
                    "unauthorized = usage_bucket.unauthorized + excluded.unauthorized, "
                    "forbidden = usage_bucket.forbidden + excluded.forbidden, "
                    "rate_limited = usage_bucket.rate_limited + excluded.rate_limited",
                    [
                        key_id,
                        environment_id,
                        minute,
                        c.requests,
                        c.unauthorized,
                        c.forbidden,
                        c.rate_limited,
                    ],
                )

    def _placeholders(self, n: int) -> str:
        return f"${n}" if self._postgres else "?"

    async def prune(self, now: datetime) -> int:
        """Delete buckets older than the retention; returns how many went."""
        cutoff = minute_of(now - self.retention)
        p = self._placeholders
        count, _ = await connections.get("default").execute_query(
            f"DELETE FROM usage_bucket WHERE minute < {p(1)}", [cutoff]
        )
        return int(count)
