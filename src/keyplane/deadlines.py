"""Per-operation time limits, enforced by one watcher per worker.

`asyncio.timeout()` arms a timer handle per operation (and per item of a batch) and cancels it
again: about 10 % of what a small keyed request costs (bench/instructions.py). Operations run
far below their 10 s limit, so a limit this coarse needs no timer of its own: each operation
notes its task and deadline (in the watcher's ticks) in a dict, and one watcher task, waking
every half second, cancels the tasks that are past theirs. A limit is therefore kept to within
half a second (later, never earlier).

The operation catches the cancellation where it awaits its execution (schema/engine.py), so a
task is only ever cancelled while it is inside that `await`: `leave()` runs before the
operation's next suspension point, and the watcher cannot run in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import math

CHECK_EVERY_SECONDS = 0.5


class Deadlines:
    def __init__(self, seconds: float, *, check_every: float = CHECK_EVERY_SECONDS) -> None:
        self.seconds = seconds
        self.check_every = min(check_every, seconds / 2)
        # Deadlines are counted in the watcher's ticks: no clock is read per operation.
        self._ticks = math.ceil(seconds / self.check_every)
        self._tick = 0
        self._running: dict[asyncio.Task[object], int] = {}
        self._expired: set[asyncio.Task[object]] = set()
        self._watcher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the watcher on the running loop (the app's lifespan does)."""
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    def enter(self) -> asyncio.Task[object] | None:
        """Note the current task's deadline; returns the task to hand to `leave`."""
        task = asyncio.current_task()
        if task is not None and self._watcher is not None:
            self._running[task] = self._tick + self._ticks
        return task

    def leave(self, task: asyncio.Task[object] | None) -> bool:
        """Forget the task; True when the watcher cancelled it for being late."""
        if task is None:
            return False
        self._running.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_every)
            self._tick = now = self._tick + 1
            late = [task for task, deadline in self._running.items() if deadline < now]
            for task in late:
                del self._running[task]
                self._expired.add(task)
                task.cancel()
