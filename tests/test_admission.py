"""A worker's admission: what runs at once, what waits for a turn, and what is refused (503)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from keyplane.unavailable import Admission


async def _next_pass() -> None:
    await asyncio.sleep(0)  # the event loop runs one pass before this task goes on


async def _settle() -> None:
    for _ in range(5):
        await _next_pass()


def _waiters(admission: Admission, count: int) -> list[asyncio.Task[bool]]:
    return [asyncio.create_task(admission.wait()) for _ in range(count)]


async def test_without_a_queue_those_within_the_limit_enter_at_once_and_the_rest_are_refused() -> (
    None
):
    admission = Admission(max_in_flight=2, max_queued=0)

    entered = [admission.enter_now(), admission.enter_now(), admission.enter_now()]

    assert entered == [True, True, False]
    assert await admission.wait() is False
    assert admission.in_flight == 2


async def test_with_a_queue_one_request_starts_per_pass_of_the_event_loop() -> None:
    admission = Admission(max_in_flight=8, max_queued=4)

    same_pass = [admission.enter_now(), admission.enter_now()]
    await _next_pass()
    next_pass = admission.enter_now()

    assert same_pass == [True, False]
    assert next_pass is True
    assert admission.in_flight == 2


async def test_waiters_start_first_come_first_served_one_per_pass() -> None:
    # given: one request running, three waiting in a queue of 8
    admission = Admission(max_in_flight=8, max_queued=8)
    admission.enter_now()
    served: list[int] = []

    async def waiter(n: int) -> None:
        if await admission.wait():
            served.append(n)
            await _next_pass()  # still running when the next pass gives the next turn
            admission.leave()

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await _next_pass()

    # when
    admission.leave()
    await asyncio.gather(*tasks)

    # then
    assert served == [0, 1, 2]
    assert admission.in_flight == 0
    assert not admission.overloaded


async def test_an_arrival_at_the_in_flight_limit_is_refused_at_once_even_with_a_queue() -> None:
    admission = Admission(max_in_flight=1, max_queued=8)
    admission.enter_now()

    assert await admission.wait() is False


async def test_an_arrival_that_finds_the_queue_full_overloads_the_worker_and_the_oldest_go() -> (
    None
):
    # given: a queue of 4; once overloaded, only the newest 2 wait
    admission = Admission(max_in_flight=8, max_queued=4, overload_queue=2)
    admission.enter_now()

    # when: six arrive in one pass (they register in the next)
    waiters = _waiters(admission, 6)
    await _next_pass()
    await _next_pass()

    # then
    assert admission.overloaded
    assert [w.done() and w.result() for w in waiters[:4]] == [False] * 4
    assert not waiters[4].done()
    for task in waiters[4:]:
        task.cancel()
    await asyncio.gather(*waiters[4:], return_exceptions=True)


async def test_when_overloaded_the_first_arrival_of_a_pass_starts_before_older_waiters() -> None:
    admission = Admission(max_in_flight=8, max_queued=2, overload_queue=2)
    admission.enter_now()
    old = _waiters(admission, 3)  # the third finds the queue full: overloaded

    await _next_pass()  # they register; nothing started in this pass yet
    newest_first = admission.enter_now()

    assert admission.overloaded
    assert newest_first is True
    for task in old:
        task.cancel()
    await asyncio.gather(*old, return_exceptions=True)


async def test_an_overloaded_worker_serves_its_newest_waiter_after_a_quiet_pass_and_recovers() -> (
    None
):
    admission = Admission(max_in_flight=8, max_queued=2, overload_queue=2)
    admission.enter_now()
    waiters = _waiters(admission, 3)
    await _next_pass()
    assert admission.overloaded
    turns: list[int] = []

    def record(n: int) -> Callable[[asyncio.Task[bool]], None]:
        def done(waiter: asyncio.Task[bool]) -> None:
            if waiter.result():
                turns.append(n)

        return done

    for n, waiter in enumerate(waiters):
        waiter.add_done_callback(record(n))

    await _settle()

    assert waiters[0].result() is False  # the oldest, refused when the queue overflowed
    assert turns == [2, 1]  # then the newest first
    assert not admission.overloaded


async def test_a_waiter_whose_client_left_gives_up_its_place() -> None:
    admission = Admission(max_in_flight=8, max_queued=4)
    admission.enter_now()
    gone = asyncio.create_task(admission.wait())
    await _next_pass()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    admission.leave()
    await _settle()

    assert admission.in_flight == 0
    assert admission.enter_now() is True
