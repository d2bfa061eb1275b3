"""One Redis round trip a request: the credentials' version, then every bucket's moving window
tested, acquired and read back for the headers, in one Lua script on limits' own connection.

limits' Redis storage answers a hit with one EVALSHA (acquire) and the figures for the headers
with a second (read the window); keyplane read the credentials' version with a GET before
both (auth/changes.py). This script does the three in one call, and it is atomic, so several
buckets (a keyed logIn: the key's and the IP's) are all charged or none is, with no race
between a test and a hit.

The window is limits' moving window, unchanged: the same list per bucket (limits' key prefix
and key), newest entry first; the same acquire test (the entry `limit - amount` from the
front must be older than the window) and writes (LPUSH the timestamp `amount` times, LTRIM to
the limit, EXPIRE); the same read (binary search for the oldest entry inside the window). The
keys stay readable and clearable by limits' own storage methods (Limiter.peek, clear).

The version check: when the caller says which version it trusted its credential under, a
different version in Redis means the credential must be verified again before anything is
charged: the script then changes nothing and answers with the version it read.

limits' storage is made with redis-py (`implementation="redispy"`, Limiter.start), not coredis:
instructions per script call, counted under valgrind (uvloop): coredis 459k; redis-py's client
414k, 310k with hiredis (its C reply parser, a dependency for that); redis-py's own connection
taken from the client's pool, packed, sent and read (its public Connection methods) 196k. So
the call is one EVALSHA on a pooled connection (the socket timeout kept), and redis-py's
registered Script (which loads the script) only runs when Redis answers NOSCRIPT (first call,
restart, SCRIPT FLUSH). A keyed request costs about 1,050k instructions in all.

Boundary: this module uses limits' storage's `bridge` (its connection and key prefix) and
redis-py's `register_script`; tests/test_library_contracts.py holds both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from limits.aio.storage import RedisClusterStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

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
-- limits searches the limit's whole range; entries past the list's end are nil either way
local low, high, found = 0, math.min(limit, redis.call('llen', key)) - 1, nil
while low <= high do
    local mid = math.floor((low + high) / 2)
    local value = tonumber(redis.call('lindex', key, mid))
    if value and value >= start then
        found = mid
        low = mid + 1
    else
        high = mid - 1
    end
end
if found then
    return {version, refused, redis.call('lindex', key, found), found + 1}
end
return {version, refused, '', 0}
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


class RedisWindows:
    """The moving windows of limits' Redis storage, charged with one script call."""

    def __init__(self, storage: RedisStorage, version_key: str) -> None:
        bridge = storage.bridge
        assert isinstance(bridge, RedispyBridge)
        self._prefixed = bridge.prefixed_key
        self._version_key = version_key
        self._connection = cast(Redis, bridge.get_connection())
        self._script = self._connection.register_script(SCRIPT)
        self._sha = self._script.sha

    async def close(self) -> None:
        """Drop the connections (limits' storage has no close of its own)."""
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
        keys: list[str | bytes] = [self._version_key]
        args: list[str | bytes | int | float] = [
            now,
            "" if expected_version is None else str(expected_version),
        ]
        for key, limit, expiry, cost in charges:
            keys.append(self._prefixed(key))
            args += [limit, expiry, cost]
        pool = self._connection.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        reply: Any = None
        try:
            command = connection.pack_command("EVALSHA", self._sha, len(keys), *keys, *args)
            await connection.send_packed_command(command, check_health=False)
            reply = await connection.read_response()
        except NoScriptError:
            reply = None
        except BaseException:
            await connection.disconnect()  # a half-read reply must not reach the next caller
            raise
        finally:
            await pool.release(connection)
        if reply is None:  # Redis does not know the script yet: redis-py's Script loads it
            reply = await self._script(keys=keys, args=args)
        answer = cast(list[Any], reply)
        version_text, refused, start, used = answer
        version = int(version_text)
        if int(refused) < 0:
            raise VersionMoved(version)
        return Charged(
            version=version,
            refused=int(refused),
            start=float(start) if used else None,
            used=int(used),
        )
