"""Counts each admitted API-key request: totalRequests and lastUsedAt, never losing a count."""

from __future__ import annotations

from datetime import datetime

from tortoise.expressions import F

from keyplane.models import ApiKey


class UsageRecorder:
    async def record(self, key_id: str, at: datetime) -> None:
        # One atomic UPDATE: concurrent requests add up instead of overwriting each other.
        await ApiKey.filter(id=key_id).update(
            total_requests=F("total_requests") + 1, last_used_at=at
        )
