"""limits' in-process storage, with a moving window whose cost does not grow with its limit,
and its clean-up paced instead of run after every hit.

The moving window (exact: at most N admitted units in any `expiry`-second span) is limits'
algorithm, entry for entry, with the entries kept the other way round. limits' MemoryStorage
keeps one `Entry` per admitted unit in a list, newest first: every hit inserts at the front
(a memmove of the whole list) and every read bisects through a Python key function. Its cost
grows with the bucket: near a 10,000/minute limit a keyed request cost 5.3 % more instructions
than near a 100/minute one (bench/instructions.py, "limits" table). Here each bucket is an
array of admission times (doubles), oldest first: a hit appends (amortised O(1)), the acquire
test reads one index, the window is a C bisect. The answers are limits' own, hit for hit (the
test drives both with one sequence of hits and clock readings and compares every answer:
tests/test_rate_limit_memory.py):

- acquire(key, limit, expiry, amount): refused when amount > limit, or when the entry
  `limit - amount` places before the newest is younger than `expiry`; else `amount` entries
  stamped now are added;
- window(key, limit, expiry): (time of the oldest entry younger than `expiry`, how many such
  entries), or (now, 0).

Nothing in either awaits, so on the event loop each is atomic: no lock is needed.

limits' async MemoryStorage also starts a pass that drops expired entries whenever the previous
pass has finished, so under load one runs all the time: each pass visits every bucket, takes
its lock, and hands a bisect to a worker thread (`asyncio.to_thread`) per bucket. Expiry only
frees memory: a decision reads entry times, never the clean-up, so when the pass runs changes
no answer. Here it runs at most once every `expiry_every` seconds, on the event loop (a bisect
is microseconds: no thread), yielding between buckets. limits' counters (incr, get) are its own.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import time
from array import array

from limits.aio.storage import MemoryStorage

EXPIRY_EVERY_SECONDS = 5.0
YIELD_EVERY_BUCKETS = 500


class PacedMemoryStorage(MemoryStorage):
    def __init__(self, expiry_every: float = EXPIRY_EVERY_SECONDS) -> None:
        super().__init__()
        self.expiry_every = expiry_every
        self._next_pass = 0.0
        # Moving windows: per key, the admission times (with their expiry), oldest first.
        # An array of doubles: 8 bytes an entry, and nothing for the garbage collector to walk
        # (a list of 10,000 floats is visited at each full collection).
        self.windows: dict[str, array[float]] = {}
        self.window_expiry: dict[str, int] = {}

    # limits calls this (name-mangled, private to MemoryStorage) before every incr.
    async def _MemoryStorage__schedule_expiry(self) -> None:
        self._schedule()

    def _schedule(self) -> None:
        now = time.monotonic()
        if now < self._next_pass or (self.timer is not None and not self.timer.done()):
            return
        self._next_pass = now + self.expiry_every
        self.timer = asyncio.create_task(self.expire())

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        if amount > limit:
            return False
        self._schedule()
        timestamp = time.time()
        times = self.windows.get(key)
        if times is None:
            times = self.windows[key] = array("d")
        index = len(times) - 1 - (limit - amount)  # limits: events[limit - amount], newest first
        if index >= 0 and times[index] >= timestamp - expiry:
            return False
        if amount == 1:
            times.append(timestamp)
        else:
            times.extend([timestamp] * amount)
        self.window_expiry[key] = expiry
        return True

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        timestamp = time.time()
        times = self.windows.get(key)
        if times:
            oldest = bisect.bisect_right(times, timestamp - expiry)  # strictly younger
            count = len(times) - oldest
            if count:
                return times[oldest], count
        return timestamp, 0

    async def clear(self, key: str) -> None:
        self.windows.pop(key, None)
        self.window_expiry.pop(key, None)
        await _clear(self, key)

    async def reset(self) -> int | None:
        count = await super().reset()
        self.windows.clear()
        self.window_expiry.clear()
        return count

    async def expire(self) -> None:
        """Drop every entry and counter that has left its window, and empty buckets."""
        now = time.time()
        for n, key in enumerate(list(self.windows)):
            if n and n % YIELD_EVERY_BUCKETS == 0:
                await asyncio.sleep(0)
            times = self.windows.get(key)
            if times is None:
                continue
            cutoff = bisect.bisect_right(times, now - self.window_expiry.get(key, 0))
            if cutoff:
                del times[:cutoff]
            if not times:
                self.windows.pop(key, None)
                self.window_expiry.pop(key, None)
        for key in [key for key, at in self.expirations.items() if at <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)


# limits wraps these in every subclass of its storages (MemoryStorage's own are wrapped twice)
# to turn a driver's errors into StorageError when asked to (wrap_exceptions, off here); each
# layer is one more coroutine per call. Memory has no driver: use the methods themselves.
_clear = inspect.unwrap(MemoryStorage.clear)
for _name in ("incr", "get", "get_expiry"):
    setattr(PacedMemoryStorage, _name, inspect.unwrap(getattr(MemoryStorage, _name)))
for _name in ("acquire_entry", "get_moving_window", "clear", "reset"):
    # limits' metaclass wraps the methods a subclass defines too: keep ours unwrapped.
    setattr(PacedMemoryStorage, _name, inspect.unwrap(getattr(PacedMemoryStorage, _name)))
