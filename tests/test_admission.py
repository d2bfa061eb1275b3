"""A worker's admission: what runs at once, what waits for a turn, and what is refused (503).

The event loop is driven pass by pass (`asyncio.sleep(0)`), and the loop's clock is set by
hand where the calm period matters: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from starlette.types import Message, Receive, Scope, Send

from keyplane.edge import Edge
from keyplane.settings import Settings, SettingsError
from keyplane.unavailable import BUSY_RETRY_SECONDS, Admission


async def _next_pass() -> None:
    await asyncio.sleep(0)  # the event loop runs one pass before this task goes on


async def _settle() -> None:
    for _ in range(10):
        await _next_pass()


def _waiters(admission: Admission, count: int) -> list[asyncio.Task[bool]]:
    return [asyncio.create_task(admission.wait()) for _ in range(count)]


class _Clock:
    """The running loop's `time()`, set by hand (no timer is scheduled in these tests)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 1000.0
        monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: self.now)


async def _enter(admission: Admission) -> bool:
    return admission.enter_now()


async def _arrivals(admission: Admission, count: int) -> list[bool]:
    """`count` requests arriving in one pass, each its own task (as the server makes them)."""
    return list(await asyncio.gather(*(_enter(admission) for _ in range(count))))


async def _overloaded(
    starts: int = 4, queued: int = 2, calm: float = 3600.0, max_wait: float = 3600.0
) -> Admission:
    """A worker made overloaded by one pass that starts `starts` requests, and one more
    (waiters never wait too long unless `max_wait` is given: no test depends on speed)."""
    admission = Admission(
        max_in_flight=100,
        max_queued=queued,
        overload_starts=starts,
        calm=calm,
        max_wait=max_wait,
    )
    assert await _arrivals(admission, starts + 1) == [True] * starts + [False]
    for _ in range(starts):
        admission.leave()
    assert admission.overloaded
    return admission


async def _cancel(tasks: list[asyncio.Task[bool]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_without_a_queue_those_within_the_limit_enter_at_once_and_the_rest_are_refused() -> (
    None
):
    admission = Admission(max_in_flight=2, max_queued=0)

    entered = [admission.enter_now(), admission.enter_now(), admission.enter_now()]

    assert entered == [True, True, False]
    assert await admission.wait() is False
    assert admission.in_flight == 2


async def test_a_burst_below_the_threshold_starts_in_one_pass_with_no_pacing_or_queue() -> None:
    # given: the defaults' shape, 64 starts in a pass before anything is paced
    admission = Admission(max_in_flight=64, max_queued=16, overload_starts=64)
    started: list[int] = []

    async def request(n: int) -> None:
        assert admission.enter_now()  # never the queue: no wait() at all
        started.append(n)
        await _next_pass()  # in flight while the others start
        admission.leave()

    # when: 48 concurrent requests (all arrive in one pass), then 48 more in the next passes
    first = [asyncio.create_task(request(n)) for n in range(48)]
    await _next_pass()
    in_one_pass = len(started)
    await asyncio.gather(*first)
    second = [asyncio.create_task(request(n)) for n in range(48, 96)]
    await asyncio.gather(*second)

    # then
    assert in_one_pass == 48
    assert started == list(range(96))
    assert not admission.overloaded
    assert admission.in_flight == 0


async def test_at_the_in_flight_limit_a_request_is_refused_at_once_never_queued() -> None:
    admission = Admission(max_in_flight=1, max_queued=8)
    admission.enter_now()

    assert admission.enter_now() is False
    assert await admission.wait() is False


async def test_a_pass_that_starts_overload_starts_requests_overloads_the_worker() -> None:
    admission = Admission(max_in_flight=100, max_queued=8, overload_starts=4)

    same_pass = await _arrivals(admission, 5)

    assert same_pass == [True, True, True, True, False]
    assert admission.overloaded


async def test_one_task_starting_requests_one_after_another_is_not_a_burst() -> None:
    admission = Admission(max_in_flight=100, max_queued=8, overload_starts=4)
    entered = []

    for _ in range(50):  # an in-process client: no pass of the loop between its requests
        entered.append(admission.enter_now())
        admission.leave()

    assert entered == [True] * 50
    assert not admission.overloaded


async def test_when_overloaded_one_request_starts_per_pass() -> None:
    admission = await _overloaded()
    await _next_pass()

    same_pass = [admission.enter_now(), admission.enter_now()]
    await _next_pass()
    next_pass = admission.enter_now()

    assert same_pass == [True, False]
    assert next_pass is True


async def test_when_overloaded_only_the_newest_wait_and_the_oldest_are_refused() -> None:
    # given: overloaded, queue of 2
    admission = await _overloaded(queued=2)

    # when: six wait in one pass
    waiters = _waiters(admission, 6)
    await _next_pass()

    # then: the four oldest refused at once, the two newest still waiting
    assert [w.done() and w.result() for w in waiters[:4]] == [False] * 4
    assert not any(w.done() for w in waiters[4:])
    await _cancel(waiters[4:])


async def test_when_overloaded_the_first_arrival_of_a_pass_starts_before_older_waiters() -> None:
    admission = await _overloaded()
    old = _waiters(admission, 2)

    await _next_pass()  # they register; nothing started in this pass yet
    newest_first = admission.enter_now()

    assert newest_first is True
    assert not any(w.done() for w in old)
    await _cancel(old)


async def test_an_overloaded_worker_serves_its_waiters_newest_first_after_quiet_passes() -> None:
    admission = await _overloaded(queued=2)
    waiters = _waiters(admission, 3)
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


@pytest.mark.parametrize(
    ("waited", "served"), [(0.001, [True, True, True]), (0.003, [False, False, False])]
)
async def test_waiters_that_waited_longer_than_max_wait_are_refused_not_served_late(
    monkeypatch: pytest.MonkeyPatch, waited: float, served: list[bool]
) -> None:
    # given: an overloaded worker where a waiter may wait 2 ms
    clock = _Clock(monkeypatch)
    admission = await _overloaded(queued=4, max_wait=0.002)
    waiters = _waiters(admission, 3)
    await _next_pass()  # they wait, from now on

    # when: their first chance of a turn comes `waited` seconds later
    clock.now += waited
    await _settle()

    # then: within 2 ms they are served; past it, refused (and the worker stays overloaded)
    assert [w.result() for w in waiters] == served
    assert admission.overloaded


def test_the_longest_wait_is_a_setting_refused_when_out_of_range(tmp_path: Path) -> None:
    development = {"KEYPLANE_ENV": "development", "KEYPLANE_DATA_DIR": str(tmp_path)}

    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({**development, "KEYPLANE_MAX_QUEUE_WAIT_MS": "0"})
    waiting = Settings.from_environ({**development, "KEYPLANE_MAX_QUEUE_WAIT_MS": "5"})

    assert any("KEYPLANE_MAX_QUEUE_WAIT_MS" in p for p in refused.value.problems)
    assert Settings.from_environ(development).max_queue_wait_ms == 2
    assert waiting.max_queue_wait_ms == 5


async def test_overload_is_left_only_after_a_calm_period_then_bursts_start_at_once_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: overloaded at t, its one waiter served
    clock = _Clock(monkeypatch)
    admission = await _overloaded(calm=0.1)
    waiter = _waiters(admission, 1)
    await _settle()
    assert waiter[0].result() is True
    admission.leave()

    # when: quiet passes within the calm period (the queue is empty)
    clock.now += 0.05
    admission.enter_now()
    admission.leave()
    await _settle()

    # then: still overloaded, still one start a pass (no flip-flop on a lull)
    assert admission.overloaded
    assert [admission.enter_now(), admission.enter_now()] == [True, False]
    admission.leave()

    # when: a pass after the calm period
    clock.now += 0.2
    await _settle()
    admission.enter_now()
    admission.leave()
    await _settle()

    # then: not overloaded, and a burst below the threshold starts in one pass again
    assert not admission.overloaded
    assert [admission.enter_now() for _ in range(4)] == [True] * 4


async def test_waiters_that_fit_in_the_queue_do_not_keep_the_worker_overloaded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: overloaded at t (its queue never overflowed since), three waiting (closed-loop
    # clients, fewer than the queue holds)
    clock = _Clock(monkeypatch)
    admission = await _overloaded(queued=4, calm=0.1)
    waiters = _waiters(admission, 3)
    await _next_pass()

    # when: the first pass after the calm period
    clock.now += 0.2
    await _next_pass()
    await _next_pass()

    # then: all three started in that pass, and the worker is no longer overloaded
    assert [w.done() and w.result() for w in waiters] == [True, True, True]
    assert not admission.overloaded


async def test_the_waiters_started_when_calm_do_not_count_towards_the_next_overload(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: overloaded with 16 waiting, all started at the first pass after the calm period
    clock = _Clock(monkeypatch)
    admission = await _overloaded(starts=64, queued=16, calm=0.1)
    waiters = _waiters(admission, 16)
    await _next_pass()
    clock.now += 0.2
    await _settle()
    assert [w.result() for w in waiters] == [True] * 16

    # when: 49 arrive in one pass (fewer than 64 in a pass: not an overload)
    entered = await _arrivals(admission, 49)

    # then
    assert entered == [True] * 49
    assert not admission.overloaded


async def test_a_waiter_whose_client_left_gives_up_its_place() -> None:
    admission = await _overloaded()
    await _next_pass()
    assert admission.enter_now()  # one in flight
    gone = asyncio.create_task(admission.wait())
    await _next_pass()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone

    admission.leave()
    await _settle()

    assert admission.in_flight == 0
    assert not admission._waiting


async def test_a_flood_through_the_edge_is_served_or_refused_with_503_and_retry_after() -> None:
    # given: an app that answers without awaiting I/O, behind an overload threshold of 8
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    edge = Edge(app, max_in_flight=1000, max_queued=4)
    edge.admission = Admission(max_in_flight=1000, max_queued=4, overload_starts=8, max_wait=3600)

    async def request() -> list[Message]:
        sent: list[Message] = []

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            sent.append(message)

        scope: Scope = {"type": "http", "method": "POST", "path": "/graphql", "headers": []}
        await edge(scope, receive, send)
        return sent

    # when: 40 requests arrive in one pass
    answers = await asyncio.gather(*(request() for _ in range(40)))

    # then: 8 start in that pass, the 4 newest of the rest wait and are served; 28 refused
    statuses = [answer[0]["status"] for answer in answers]
    assert statuses == [200] * 8 + [503] * 28 + [200] * 4
    refused = answers[8]
    headers = dict(refused[0]["headers"])
    assert headers[b"retry-after"] == str(BUSY_RETRY_SECONDS).encode()
    body = json.loads(refused[1]["body"])
    assert body["errors"][0]["extensions"]["code"] == "SERVICE_UNAVAILABLE"
    assert edge.admission.in_flight == 0
