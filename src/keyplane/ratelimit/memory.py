"""limits' in-process storage, with its clean-up paced instead of run after every hit.

limits' async MemoryStorage starts a pass that drops expired moving-window entries whenever
the previous pass has finished, so under load one runs all the time: each pass visits every
bucket, takes its lock, and hands a bisect to a worker thread (`asyncio.to_thread`) per
bucket. On one core that thread traffic cost more than the rest of the rate limit together
(measured: bench/run.py, anonymous `{ __typename }`, ~140 µs of server CPU per request).

Expiry only frees memory: a moving window's decision reads entry times, never the clean-up,
so when the pass runs changes no answer. Here it runs at most once every `expiry_every`
seconds, on the event loop (a bisect is microseconds: no thread), yielding between buckets.
Everything else (the entries, the locks, acquire_entry, get_moving_window) is limits' own.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import time

from limits.aio.storage import MemoryStorage

EXPIRY_EVERY_SECONDS = 5.0
YIELD_EVERY_BUCKETS = 500


class PacedMemoryStorage(MemoryStorage):
    def __init__(self, expiry_every: float = EXPIRY_EVERY_SECONDS) -> None:
        super().__init__()
        self.expiry_every = expiry_every
        self._next_pass = 0.0

    # limits calls this (name-mangled, private to MemoryStorage) before every hit and incr.
    async def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now < self._next_pass or (self.timer is not None and not self.timer.done()):
            return
        self._next_pass = now + self.expiry_every
        self.timer = asyncio.create_task(self.expire())

    async def expire(self) -> None:
        """Drop every entry and counter that has left its window, and empty buckets."""
        now = time.time()
        for n, key in enumerate(list(self.events)):
            if n and n % YIELD_EVERY_BUCKETS == 0:
                await asyncio.sleep(0)
            async with self.locks[key]:
                events = self.events.get(key)
                if events:  # newest first: keep those that expire after now
                    cutoff = bisect.bisect_left(events, -now, key=lambda event: -event.expiry)
                    del events[cutoff:]
                if not events:
                    self.events.pop(key, None)
                    self.locks.pop(key, None)
        for key in [key for key, at in self.expirations.items() if at <= now]:
            self.storage.pop(key, None)
            self.expirations.pop(key, None)
            self.locks.pop(key, None)


# limits wraps these in every subclass of its storages (MemoryStorage's own are wrapped twice)
# to turn a driver's errors into StorageError when asked to (wrap_exceptions, off here); each
# layer is one more coroutine per call. Memory has no driver: use the methods themselves.
for _name in ("acquire_entry", "get_moving_window", "incr", "get", "get_expiry", "clear"):
    setattr(PacedMemoryStorage, _name, inspect.unwrap(getattr(MemoryStorage, _name)))
