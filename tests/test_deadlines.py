"""The per-operation time limit's watcher: late operations are cancelled and told so."""

from __future__ import annotations

import asyncio

from keyplane.deadlines import Deadlines


async def test_an_operation_past_its_deadline_is_cancelled_and_told_it_was_late() -> None:
    # given
    deadlines = Deadlines(0.1, check_every=0.02)
    deadlines.start()

    async def operation(seconds: float) -> str:
        task = deadlines.enter()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            return "late" if deadlines.leave(task) else "cancelled"
        deadlines.leave(task)
        return "done"

    # when
    answers = await asyncio.gather(operation(0.01), operation(5))
    await deadlines.stop()

    # then
    assert list(answers) == ["done", "late"]


async def test_a_task_cancelled_for_being_late_can_go_on_afterwards() -> None:
    # given
    deadlines = Deadlines(0.05, check_every=0.01)
    deadlines.start()

    async def operation() -> str:
        task = deadlines.enter()
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            assert deadlines.leave(task)
        await asyncio.sleep(0.01)  # not cancelled again: the cancellation was taken back
        return "answered"

    # when
    answer = await operation()
    await deadlines.stop()

    # then
    assert answer == "answered"
