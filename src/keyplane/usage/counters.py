"""An API key's usage counters as a reader sees them: the stored counters plus this process's
unflushed counts, read per request through a DataLoader (loaders.py).

Credentials are cached without counters (auth/verified.py): a request that does not ask for
`totalRequests` or `lastUsedAt` reads none, and one that does reads every key it names in one
query. The stored counters and the pending ones are taken as of one moment (`UsageBuffer.
with_pending`), so a reader never sees a count go backwards nor a request counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyplane.records import Lookups, instant
from keyplane.usage.buffer import UsageBuffer, latest


@dataclass(frozen=True, slots=True)
class KeyCounters:
    total_requests: int
    last_used_at: datetime | None


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

        rows, pending = await self._usage.with_pending(key_ids, stored)
        by_id = {row["id"]: row for row in rows}
        counters = []
        for key_id in key_ids:
            row = by_id.get(key_id)  # None: deleted (its pending counts are dropped at flush)
            total = 0 if row is None else int(row["total_requests"])
            last_used_at = None if row is None else instant(row["last_used_at"])
            unflushed = pending.get(key_id)
            if unflushed is not None:
                total += unflushed.requests
                last_used_at = latest(last_used_at, unflushed.last_used_at)
            counters.append(KeyCounters(total, last_used_at))
        return counters
