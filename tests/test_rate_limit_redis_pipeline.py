"""The rate limiter's Redis calls share one pipelined connection (ratelimit/redis_window.py
`Pipelined`): replies reach the calls that sent them, a cancelled call leaves the others'
replies in place, and a Redis that stops answering fails the waiting calls after a bounded
wait instead of holding the requests forever; the next call connects again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import cast

import hiredis
import pytest
import redis.asyncio as redis
from limits.aio.storage import RedisStorage

from keyplane.auth.changes import REDIS_KEY
from keyplane.ratelimit.limiter import Bucket, Limiter
from keyplane.ratelimit.redis_window import Charged, RedisWindows
from keyplane.ratelimit.tiers import Tier, per_minute
from tests.serve_process import REDIS_URL, needs_redis

BOUND = 0.2


class SilentRedis:
    """A Redis that completes redis-py's handshake, then never answers an EVALSHA (or, `mute`,
    never answers at all)."""

    def __init__(self, *, mute: bool = False) -> None:
        self.mute = mute
        self.connections = 0
        self.unanswered = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        commands = hiredis.Reader()  # a command is a RESP array, as a reply is
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                commands.feed(data)
                while (command := commands.gets()) is not False:
                    if self.mute or cast(list[bytes], command)[0].upper() == b"EVALSHA":
                        self.unanswered += 1
                    else:
                        writer.write(b"+OK\r\n")
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SilentRedis]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        try:
            yield self
        finally:
            self._server.close()


def _windows(url: str) -> RedisWindows:
    storage = RedisStorage("async+" + url, implementation="redispy", socket_timeout=BOUND)
    return RedisWindows(storage, REDIS_KEY, bound=BOUND)


async def test_a_redis_that_stops_answering_fails_the_waiting_calls_and_the_next_reconnects() -> (
    None
):
    async with SilentRedis().running() as silent:
        windows = _windows(silent.url)
        charges = [("k", 10, 60, 1)]

        # when: three calls wait on a Redis that never answers (the outer wait_for only
        # keeps a broken bound from hanging the suite)
        calls = [
            asyncio.wait_for(windows.charge(charges, now=1.0, expected_version=None), 30)
            for _ in range(3)
        ]
        failures = await asyncio.gather(*calls, return_exceptions=True)

        # then: each failed with the pipeline's own timeout, on one connection
        assert [type(f) for f in failures] == [TimeoutError] * 3
        assert all("did not answer" in str(f) for f in failures)
        assert (silent.connections, silent.unanswered) == (1, 3)

        # and: the next call connects again (and waits, bounded, again)
        with pytest.raises(TimeoutError, match="did not answer"):
            await asyncio.wait_for(windows.charge(charges, now=1.0, expected_version=None), 30)
        assert (silent.connections, silent.unanswered) == (2, 4)
        await windows.close()


async def test_calls_that_find_no_connection_share_one_bounded_attempt_to_connect() -> None:
    async with SilentRedis(mute=True).running() as mute:
        windows = _windows(mute.url)
        charges = [("k", 10, 60, 1)]

        # when: five calls arrive while the handshake never completes
        calls = [
            asyncio.wait_for(windows.charge(charges, now=1.0, expected_version=None), 30)
            for _ in range(5)
        ]
        failures = await asyncio.gather(*calls, return_exceptions=True)

        # then: one connection was tried, and its failure answered each of them
        assert [type(f) for f in failures] == [TimeoutError] * 5
        assert mute.connections == 1
        await windows.close()


async def test_a_limiter_on_a_silent_redis_lets_the_request_through_once_the_wait_ends() -> None:
    async with SilentRedis().running() as silent:
        limiter = Limiter(silent.url)
        limiter.start()
        assert limiter._windows is not None
        limiter._windows = _windows(silent.url)  # the test's short bound
        bucket = Bucket(Tier.API_KEY, "key_1", per_minute(10))

        # when
        decision = await asyncio.wait_for(limiter.charge([(bucket, 1)]), 30)

        # then: failed open, counted, as for any Redis failure
        assert decision.allowed
        assert limiter.storage_failures == 1
        await limiter.close()


@needs_redis
async def test_replies_reach_their_own_calls_when_some_calls_are_cancelled() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    await client.flushdb()
    windows = _windows(REDIS_URL)
    await windows.charge([("warm", 10, 60, 1)], now=1.0, expected_version=None)

    # when: 20 calls in one batch, each on its own key at its own cost; every other one is
    # cancelled before its reply comes
    async def charge(n: int) -> Charged:
        return await windows.charge([(f"key-{n}", 100, 60, n)], now=2.0, expected_version=None)

    tasks = [asyncio.ensure_future(charge(n)) for n in range(1, 21)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)

    # then: each call kept got its own key's figures (the window holds its cost)
    kept = {n: answer for n, answer in zip(range(1, 21), done, strict=True) if n % 2 == 0}
    assert {n: cast(Charged, answer).used for n, answer in kept.items()} == {n: n for n in kept}
    # and the connection is still in step: a later call gets its own reply
    later = await windows.charge([("key-2", 100, 60, 3)], now=3.0, expected_version=None)
    assert later.used == 5
    await windows.close()
    await client.flushdb()
    await client.aclose()
