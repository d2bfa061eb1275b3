"""An API key's usage counters as a reader sees them: the stored counters plus this process's
unflushed counts, read per request through a DataLoader (loaders.py).

Credentials are cached without counters (auth/verified.py): a request that does not ask for
`totalRequests` or `lastUsedAt` reads none, and one that does reads every key it names in one
query. The stored counters and the pending ones are taken as of one moment (`UsageBuffer.
with_pending`), so a reader never sees a count go backwards nor a request counted twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from keyplane.records import KeyCounters, KeyRecord, Lookups, key_counters
from keyplane.usage.buffer import KeyTotal, UsageBuffer, latest

__all__ = ["Counters", "KeyCounters"]


def _with(stored: KeyCounters, unflushed: KeyTotal | None) -> KeyCounters:
    if unflushed is None:
        return stored
    return KeyCounters(
        stored.total_requests + unflushed.requests,
        latest(stored.last_used_at, unflushed.last_used_at),
    )


class Counters:
    """The batch read behind the per-request counters DataLoader."""

    def __init__(self, lookups: Lookups, usage: UsageBuffer) -> None:
        self._lookups = lookups
        self._usage = usage

    async def load(self, key_ids: list[str]) -> list[KeyCounters]:
        async def stored() -> list[dict[str, Any]]:
            return await self._lookups.by_ids(
                "api_key", "id, total_requests, last_used_at", key_ids
            )

        rows, pending = await self._usage.with_pending(stored, lambda _: key_ids)
        by_id = {row["id"]: key_counters(row) for row in rows}
        # A key missing was deleted: its unflushed counts are dropped at the flush.
        return [_with(by_id.get(key_id, NO_COUNTS), pending.get(key_id)) for key_id in key_ids]

    async def page(
        self, read: Callable[[], Awaitable[list[tuple[KeyRecord, KeyCounters]]]]
    ) -> list[tuple[KeyRecord, KeyCounters]]:
        """A page of keys read with their stored counters (`read`, one query), each with the
        unflushed counts added."""
        rows, pending = await self._usage.with_pending(read, lambda rows: (k.id for k, _ in rows))
        return [(key, _with(counters, pending.get(key.id))) for key, counters in rows]


NO_COUNTS = KeyCounters(0, None)
