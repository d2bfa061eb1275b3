"""The in-process rate-limit storage: limits' MemoryStorage with its clean-up paced.

The clean-up only frees memory: entries that left their window are dropped (and their empty
buckets with them), entries still inside it stay, and a pass starts at most once per period
whatever the traffic, instead of after every hit.
"""

from __future__ import annotations

import asyncio

import pytest

from keyplane.ratelimit.limiter import Bucket, Limiter
from keyplane.ratelimit.memory import PacedMemoryStorage
from keyplane.ratelimit.tiers import Tier, per_minute


@pytest.mark.slow
async def test_a_pass_drops_entries_that_left_their_window_and_keeps_the_rest() -> None:
    storage = PacedMemoryStorage(expiry_every=0)
    assert await storage.acquire_entry("short", 10, 1)
    assert await storage.acquire_entry("long", 10, 60)
    await asyncio.sleep(1.05)

    await storage.expire()

    assert "short" not in storage.events
    assert "short" not in storage.locks
    assert len(storage.events["long"]) == 1
    assert await storage.get_moving_window("long", 10, 60) == (storage.events["long"][0].atime, 1)


async def test_entries_inside_their_window_survive_a_pass_and_still_count() -> None:
    storage = PacedMemoryStorage(expiry_every=0)
    for _ in range(3):
        assert await storage.acquire_entry("key", 3, 60)

    await storage.expire()

    assert not await storage.acquire_entry("key", 3, 60)


async def test_a_pass_starts_at_most_once_per_period_under_traffic() -> None:
    storage = PacedMemoryStorage(expiry_every=60)
    assert await storage.acquire_entry("key", 1000, 60)
    first = storage.timer
    assert first is not None
    await first

    for _ in range(100):
        assert await storage.acquire_entry("key", 1000, 60)

    assert storage.timer is first


async def test_the_limiter_on_memory_admits_exactly_the_limit_and_reports_what_is_left() -> None:
    limiter = Limiter("memory://")
    limiter.start()
    bucket = Bucket(Tier.API_KEY, "key_1", per_minute(3))

    decisions = [await limiter.charge([(bucket, 1)]) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
