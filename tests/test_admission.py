"""A worker's admission: what runs at once, what waits for a turn, and what is refused (503)."""

from __future__ import annotations

import asyncio

import pytest

from keyplane.unavailable import Admission


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_within_the_limit_enter_without_waiting() -> None:
    admission = Admission(max_in_flight=2, max_queued=4)

    assert [admission.enter_now(), admission.enter_now(), admission.enter_now()] == [
        True,
        True,
        False,
    ]
    assert admission.in_flight == 2


async def test_without_a_queue_a_request_over_the_limit_is_refused_at_once() -> None:
    admission = Admission(max_in_flight=1, max_queued=0)
    admission.enter_now()

    assert await admission.wait() is False


async def test_a_short_queue_is_served_first_come_first_served() -> None:
    # given: one request running, three waiting (under half of a queue of 8)
    admission = Admission(max_in_flight=1, max_queued=8)
    admission.enter_now()
    served: list[int] = []

    async def waiter(n: int) -> None:
        if await admission.wait():
            served.append(n)
            admission.leave()

    tasks = [asyncio.create_task(waiter(n)) for n in range(3)]
    await _settle()

    # when
    admission.leave()
    await asyncio.gather(*tasks)

    # then
    assert served == [0, 1, 2]
    assert admission.in_flight == 0


async def test_past_half_full_the_newest_waiter_goes_first() -> None:
    admission = Admission(max_in_flight=1, max_queued=4)
    admission.enter_now()
    turns = [asyncio.create_task(admission.wait()) for _ in range(3)]
    await _settle()

    admission.leave()
    await _settle()

    assert [t.done() for t in turns] == [False, False, True]
    assert admission.in_flight == 1
    for task in turns:
        task.cancel()


async def test_a_full_queue_refuses_its_oldest_waiter_to_admit_an_arrival() -> None:
    admission = Admission(max_in_flight=1, max_queued=2)
    admission.enter_now()
    first, second = (asyncio.create_task(admission.wait()) for _ in range(2))
    await _settle()

    third = asyncio.create_task(admission.wait())
    await _settle()

    assert [first.done(), second.done(), third.done()] == [True, False, False]
    assert first.result() is False
    for task in (second, third):
        task.cancel()


async def test_a_waiter_whose_client_left_gives_up_its_place() -> None:
    admission = Admission(max_in_flight=1, max_queued=4)
    admission.enter_now()
    gone = asyncio.create_task(admission.wait())
    await _settle()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    admission.leave()

    assert admission.in_flight == 0
    assert admission.enter_now() is True
