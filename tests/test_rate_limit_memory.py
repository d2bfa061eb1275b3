"""The in-process rate-limit storage: limits' moving window kept oldest first (answers equal to
limits' own, hit for hit), and its clean-up paced.

The clean-up only frees memory: entries that left their window are dropped (and their empty
buckets with them), entries still inside it stay, and a pass starts at most once per period
whatever the traffic, instead of after every hit.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest
from limits.aio.storage import MemoryStorage

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

    assert "short" not in storage.windows
    assert len(storage.windows["long"]) == 1
    assert await storage.get_moving_window("long", 10, 60) == (storage.windows["long"][0], 1)


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


async def test_the_window_answers_as_limits_own_memory_window_for_one_sequence_of_hits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both storages get the same hits at the same clock readings: every acquire answer and
    every window (count, and its start when anything is in it) is the same, through limit
    changes, multi-unit costs, quiet spells longer than the window and clean-up passes."""
    now = [1_800_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    ours = PacedMemoryStorage(expiry_every=3600)
    theirs = MemoryStorage()
    pick = random.Random(14)
    answers = 0
    for step in range(3000):
        now[0] += pick.choice([0.0, 0.001, 0.25, 1.0, 3.0, 7.5]) * (30 if step % 400 == 0 else 1)
        key = pick.choice(["a", "b", "c"])
        limit = pick.choice([1, 3, 10, 25]) if key != "c" else 10
        expiry = 10 if key != "b" else 60
        amount = pick.choice([1, 1, 1, 2, 5, 30])
        got = await ours.acquire_entry(key, limit, expiry, amount)
        expected = await theirs.acquire_entry(key, limit, expiry, amount)
        assert got == expected, (step, key, limit, amount)
        answers += got
        (start, count), (their_start, their_count) = (
            await ours.get_moving_window(key, limit, expiry),
            await theirs.get_moving_window(key, limit, expiry),
        )
        assert count == their_count, (step, key)
        if count:
            assert start == their_start, (step, key)
        if step % 500 == 0:
            await ours.expire()
    assert 300 < answers < 2700  # both answers happened many times
    if theirs.timer is not None:
        theirs.timer.cancel()


async def test_a_hit_near_a_large_limit_costs_the_same_list_work_as_near_a_small_one() -> None:
    """The acquire test reads one index and a hit appends: a bucket near 10,000 holds 10,000
    times, and still admits exactly up to its limit."""
    storage = PacedMemoryStorage(expiry_every=3600)
    assert await storage.acquire_entry("large", 10_000, 60, amount=9_999)
    assert await storage.acquire_entry("large", 10_000, 60)
    assert not await storage.acquire_entry("large", 10_000, 60)
    assert (await storage.get_moving_window("large", 10_000, 60))[1] == 10_000
