"""One Redis round trip a request: the credentials' version, then every bucket's moving window
tested, acquired and read back for the headers, in one Lua script on limits' own connection.

limits' Redis storage answers a hit with one EVALSHA (acquire) and the figures for the headers
with a second (read the window); keyplane read the credentials' version with a GET before
both (auth/changes.py). This script does the three in one call, and it is atomic, so several
buckets (a keyed logIn: the key's and the IP's) are all charged or none is, with no race
between a test and a hit.

The window is limits' moving window: the same list per bucket (limits' key prefix and key),
newest entry first; the same acquire test (the entry `limit - amount` from the front must be
older than the window) and writes (LPUSH the timestamp `amount` times, LTRIM to the limit,
EXPIRE); the same answer to a read (the oldest entry inside the window, and how many are).
One difference in what is kept, not in any answer: limits leaves the entries that have left
the window in the list until LTRIM pushes them out, and finds the oldest one still inside by
a binary search at every read (a dozen LINDEX walks into a list that holds a minute of traffic
at a large limit); this script drops them from the list's end as they leave, each once, so
the list holds the window and its length is the count. The keys stay readable and
clearable by limits' own storage methods (Limiter.peek, clear).

The version check: when the caller says which version it trusted its credential under, a
different version in Redis means the credential must be verified again before anything is
charged: the script then changes nothing and answers with the version it read.

limits' storage is made with redis-py (`implementation="redispy"`, Limiter.start), not coredis:
instructions per script call, counted under valgrind (uvloop): coredis 459k; redis-py's client
414k, 310k with hiredis (its C reply parser). The call does not go through redis-py's client
nor its pool either (`Pipelined`, below): every call of the process shares one connection,
packed here, written once per event-loop turn and read back in order with hiredis. A keyed
viewer on PostgreSQL + Redis, in process (16 in flight, 100 keys, valgrind): 1,553k
instructions a request through a pooled connection (its pool, redis-py's packing, a task and a
timer per call for the socket timeout), 1,164k pipelined, against 1,002k on SQLite + memory.
redis-py's registered Script (which loads the script) only runs when Redis answers NOSCRIPT
(first call, restart, SCRIPT FLUSH).

Boundary: this module uses limits' storage's `bridge` (its connection and key prefix),
redis-py's `register_script`, its pool's `make_connection()` and a connected connection's
`_reader` and `_writer` (asyncio streams); tests/test_library_contracts.py holds them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import hiredis
from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import NoScriptError, ResponseError

SCRIPT = """
local now = tonumber(ARGV[1])
local expected = ARGV[2]
local version = redis.call('get', KEYS[1]) or '0'
if expected ~= '' and version ~= expected then
    return {version, -1, '', 0}
end
local buckets = #KEYS - 1
local refused = 0
for i = 1, buckets do
    local limit = tonumber(ARGV[3 * i])
    local expiry = tonumber(ARGV[3 * i + 1])
    local amount = tonumber(ARGV[3 * i + 2])
    if amount > limit then
        refused = i
        break
    end
    local entry = redis.call('lindex', KEYS[i + 1], limit - amount)
    if entry and tonumber(entry) >= now - expiry then
        refused = i
        break
    end
end
if refused == 0 then
    for i = 1, buckets do
        local limit = tonumber(ARGV[3 * i])
        local expiry = tonumber(ARGV[3 * i + 1])
        local amount = tonumber(ARGV[3 * i + 2])
        local entries = {}
        for n = 1, amount do
            entries[n] = now
        end
        for n = 1, #entries, 5000 do
            redis.call('lpush', KEYS[i + 1], unpack(entries, n, math.min(n + 4999, #entries)))
        end
        redis.call('ltrim', KEYS[i + 1], 0, limit - 1)
        redis.call('expire', KEYS[i + 1], expiry)
    end
end
local shown = refused
if shown == 0 then
    shown = 1
end
local key = KEYS[shown + 1]
local limit = tonumber(ARGV[3 * shown])
local start = now - tonumber(ARGV[3 * shown + 1])
-- Entries leave the window from the list's end (the oldest). limits leaves them there until
-- LTRIM pushes them out and binary-searches past them at every read (a dozen LINDEX walks
-- into a list of a minute's traffic); here they are dropped as they leave, each once, so the
-- list holds the window and its length is the count. The first one still inside is found by
-- galloping from the end: at a steady rate one or two have left since the last request.
local length = redis.call('llen', key)
if length == 0 then
    return {version, refused, '', 0}
end
local oldest = redis.call('lindex', key, -1)
if tonumber(oldest) < start then
    local kept, gone, step = -1, length - 1, 1  -- indexes known inside / known left
    oldest = nil
    while gone - step >= 0 do
        local value = redis.call('lindex', key, gone - step - length)
        if tonumber(value) >= start then
            kept, oldest = gone - step, value
            break
        end
        gone = gone - step
        step = step * 2
    end
    while gone - kept > 1 do
        local mid = math.floor((kept + gone) / 2)
        local value = redis.call('lindex', key, mid - length)
        if tonumber(value) >= start then
            kept, oldest = mid, value
        else
            gone = mid
        end
    end
    if kept < 0 then
        redis.call('del', key)
        return {version, refused, '', 0}
    end
    redis.call('ltrim', key, 0, kept)
    length = kept + 1
end
-- limits reads only the limit's range (a limit lowered since those entries were added)
if limit < 1 then
    return {version, refused, '', 0}
end
if length > limit then
    return {version, refused, redis.call('lindex', key, limit - 1), limit}
end
return {version, refused, oldest, length}
"""


class VersionMoved(Exception):
    """The credentials' version is not the one the caller trusted its credential under."""

    def __init__(self, version: int) -> None:
        self.version = version


@dataclass(frozen=True, slots=True)
class Charged:
    version: int
    refused: int  # 0 when every bucket was charged, else the 1-based index of the first refusal
    start: float | None  # the oldest entry inside the reported bucket's window
    used: int


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class Pipelined:
    """Every script call of this process on one Redis connection, written in batches and read
    back in order (Redis answers the commands of one connection in the order it got them).

    The commands the requests of one event-loop turn send go out in one write, and one read
    takes whatever replies have come: a request costs a future and its share of one write and
    one read, not a pooled connection, a send and a read of its own. Under load (16-32
    requests in flight) that is several requests per system call.

    The connection is one of redis-py's (connected, authenticated and on its database by
    redis-py, from the client's own settings), with no socket timeout: its stream reader and
    writer are then read and written directly, with hiredis' reply parser. The wait is bounded
    per request all the same, without a timer per request: a watchdog ticks every
    `bound / 2` seconds, and when the oldest unanswered call is more than two ticks old (it
    waited `bound` to `1.5 * bound`), the connection is dropped and every call waiting on it
    fails with TimeoutError; the next call connects again.
    """

    def __init__(self, pool: ConnectionPool, *, bound: float) -> None:
        self._pool = pool
        self._bound = bound
        self._tick_seconds = bound / 2
        self._connecting: asyncio.Future[None] | None = None
        self._connection: AbstractConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._waiting: deque[tuple[asyncio.Future[Any], int]] = deque()
        self._outgoing: list[bytes] = []
        self._tick = 0
        self._watchdog: asyncio.TimerHandle | None = None
        self._closing: set[asyncio.Task[None]] = set()

    async def call(self, command: bytes) -> Any:
        """Send one packed command and return its reply (a ResponseError is raised)."""
        if self._writer is None:
            await self._connect()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._waiting.append((future, self._tick))
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(command)
        return await future

    async def close(self) -> None:
        if self._connecting is not None:
            self._connecting.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._drop(ConnectionError("closed"))
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    async def _connect(self) -> None:
        """Connect, once for every call that finds no connection: they share one attempt (and
        its failure), bounded like a call."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        await asyncio.shield(self._connecting)

    async def _open(self) -> None:
        connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._bound):
                await connection.connect()
        except BaseException:
            await connection.disconnect(nowait=True)
            raise
        reader, writer = connection._reader, connection._writer  # boundary: see the docstring
        assert reader is not None
        assert writer is not None
        self._connection, self._writer = connection, writer
        self._reading = asyncio.create_task(self._read(reader))
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().call_later(self._tick_seconds, self._check)

    def _opened(self, attempt: asyncio.Future[None]) -> None:
        self._connecting = None
        if not attempt.cancelled():
            attempt.exception()  # each caller has it raised; nothing else should log it

    def _flush(self) -> None:
        outgoing, self._outgoing = self._outgoing, []
        if outgoing and self._writer is not None:
            self._writer.write(b"".join(outgoing))

    async def _read(self, stream: asyncio.StreamReader) -> None:
        replies = hiredis.Reader()
        waiting = self._waiting
        try:
            while True:
                data = await stream.read(65536)
                if not data:
                    raise ConnectionError("Redis closed the connection")
                replies.feed(data)
                reply = replies.gets()
                while reply is not False:
                    future, _ = waiting.popleft()
                    if not future.done():  # its request may have been cancelled meanwhile
                        if isinstance(reply, hiredis.ReplyError):
                            future.set_exception(_error(str(reply)))
                        else:
                            future.set_result(reply)
                    reply = replies.gets()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a lost connection, a reply nobody waits for, a bad reply
            if self._reading is asyncio.current_task():
                self._reading = None
                self._drop(exc)

    def _check(self) -> None:
        self._tick += 1
        if self._waiting and self._tick - self._waiting[0][1] > 2:
            self._drop(TimeoutError(f"Redis did not answer within {self._bound:g} s"))
        self._watchdog = asyncio.get_running_loop().call_later(self._tick_seconds, self._check)

    def _drop(self, exc: BaseException) -> None:
        """Close the connection and fail every call still waiting on it."""
        connection, self._connection, self._writer = self._connection, None, None
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.cancel()
        waiting, self._waiting = self._waiting, deque()
        self._outgoing = []
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
        if connection is not None:
            task = asyncio.ensure_future(connection.disconnect(nowait=True))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)


def _error(message: str) -> ResponseError:
    return NoScriptError(message) if message.startswith("NOSCRIPT") else ResponseError(message)


class RedisWindows:
    """The moving windows of limits' Redis storage, charged with one script call."""

    def __init__(self, storage: RedisStorage, version_key: str, *, bound: float = 0.5) -> None:
        bridge = storage.bridge
        assert isinstance(bridge, RedispyBridge)
        self._prefixed = bridge.prefixed_key
        self._connection = cast(Redis, bridge.get_connection())
        self._script = self._connection.register_script(SCRIPT)
        self._pipe = Pipelined(self._connection.connection_pool, bound=bound)
        # EVALSHA, the script's digest and the version key: the same in every call.
        self._head = b"$7\r\nEVALSHA\r\n" + _bulk(self._script.sha.encode())
        self._version_key_name = version_key
        self._version_key = _bulk(version_key.encode())

    async def close(self) -> None:
        """Drop the connections (limits' storage has no close of its own)."""
        await self._pipe.close()
        await self._connection.aclose()

    @staticmethod
    def usable(storage: object) -> bool:
        """A single Redis (or a sentinel's master) through redis-py: a cluster would spread the
        version and the buckets over slots, which one script cannot touch."""
        return (
            isinstance(storage, RedisStorage)
            and not isinstance(storage, RedisClusterStorage)
            and isinstance(storage.bridge, RedispyBridge)
        )

    async def charge(
        self,
        charges: list[tuple[str, int, int, int]],
        *,
        now: float,
        expected_version: int | None,
    ) -> Charged:
        """Each (key, limit, expiry, cost) charged, or none; VersionMoved when `expected_version`
        is given and is not the version in Redis (nothing charged then)."""
        # EVALSHA packed here, as redis-py packs it (a float as its repr), for what its
        # encoder costs per argument.
        keys = [self._version_key]
        args = [
            _bulk(repr(now).encode()),
            _bulk(b"" if expected_version is None else b"%d" % expected_version),
        ]
        for key, limit, expiry, cost in charges:
            keys.append(_bulk(self._prefixed(key).encode()))
            args += [_bulk(b"%d" % limit), _bulk(b"%d" % expiry), _bulk(b"%d" % cost)]
        count = len(keys)
        command = b"".join(
            [b"*%d\r\n" % (3 + count + len(args)), self._head, _bulk(b"%d" % count), *keys, *args]
        )
        try:
            reply: Any = await self._pipe.call(command)
        except NoScriptError:  # Redis does not know the script yet: redis-py's Script loads it
            plain: list[str | int | float] = [
                now,
                "" if expected_version is None else str(expected_version),
            ]
            for _, limit, expiry, cost in charges:
                plain += [limit, expiry, cost]
            reply = await self._script(
                keys=[self._version_key_name, *(self._prefixed(key) for key, *_ in charges)],
                args=plain,
            )
        version_text, refused, start, used = cast(list[Any], reply)
        version = int(version_text)
        if int(refused) < 0:
            raise VersionMoved(version)
        return Charged(
            version=version,
            refused=int(refused),
            start=float(start) if used else None,
            used=int(used),
        )
