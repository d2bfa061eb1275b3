"""The rate-limit decision: which bucket, how much it costs, allowed or not. No GraphQL here.

A moving window keeps the per-minute figures exact. Several buckets are checked first and
consumed after, so a refused request consumes nothing (limits' hits are not atomic across
buckets). A single bucket's hit is atomic on every storage: a concurrent request cannot
overdraw it. On a single Redis, one script charges every bucket, reads the window back for the
headers and reads the credentials' version, in one round trip (ratelimit/redis_window.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, cast

from limits import RateLimitItem
from limits.aio.storage import MovingWindowSupport, RedisStorage, Storage
from limits.storage import storage_from_string

from keyplane.ratelimit.memory import PacedMemoryStorage
from keyplane.ratelimit.redis_window import RedisWindows, VersionMoved
from keyplane.ratelimit.tiers import Tier

logger = logging.getLogger(__name__)
BREAKER_SECONDS = 2.0


class LimiterUnavailable(Exception):
    """The rate-limit storage cannot be reached and keyplane is set to fail closed."""


class CredentialsMoved(Exception):
    """The credentials' version is not the one the principal was trusted under (or could not
    be read: None): verify the credential again under `version`, then charge. Nothing was
    charged."""

    def __init__(self, version: int | None) -> None:
        self.version = version


class SharedVersion(Protocol):
    """The credentials' version in Redis (auth/changes.py RedisVersion), as the limiter sees it."""

    key: str
    confirmed_by_limiter: bool

    def seen(self, version: int) -> None: ...

    def unknown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Bucket:
    tier: Tier
    identity: str
    limit: RateLimitItem
    # The storage key, as limits' MovingWindowRateLimiter names it: computed once.
    key: str = field(init=False, compare=False)
    amount: int = field(init=False, compare=False)
    window_seconds: int = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.limit.key_for(self.tier, self.identity))
        object.__setattr__(self, "amount", int(self.limit.amount))
        object.__setattr__(self, "window_seconds", int(self.limit.get_expiry()))


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    bucket: Bucket
    remaining: int
    reset_at: float  # epoch seconds at which the next unit frees up

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.reset_at - now))


def storage_uri(setting: str) -> str:
    """Our setting (`memory://`, `redis://...`) as limits' async storage URI."""
    if setting.startswith("async+"):
        return setting
    return "async+" + setting


class Limiter:
    """A moving window over limits' storage (in-process memory or Redis).

    It calls the storage's moving-window operations directly, as limits'
    MovingWindowRateLimiter does, with each bucket's key computed once instead of on every
    call: a hit is `acquire_entry`, the figures for the headers `get_moving_window`.
    """

    def __init__(
        self,
        uri: str,
        *,
        fail_closed: bool = False,
        clock: Callable[[], float] = time.time,
        version: SharedVersion | None = None,
        version_key: str = "keyplane:credentials:version",
    ) -> None:
        self.uri = storage_uri(uri)
        self.fail_closed = fail_closed
        self._clock = clock
        self._storage: MovingWindowSupport | None = None
        self._version = version
        self._version_key = version.key if version is not None else version_key
        self._windows: RedisWindows | None = None
        self.storage_failures = 0
        self._down_until = 0.0

    @property
    def shared(self) -> bool:
        """Whether every process sees the same counts (anything but in-process memory)."""
        return not self.uri.startswith("async+memory://")

    def start(self) -> None:
        """Create the storage; call inside the running event loop (the lifespan)."""
        if self.uri == "async+memory://":
            self._storage = PacedMemoryStorage()
            return
        options: dict[str, float | str | bool] = {}
        if self.uri.startswith(("async+redis://", "async+rediss://")):
            # redis-py: its calls cost less CPU than coredis' (ratelimit/redis_window.py).
            options = {
                "implementation": "redispy",
                "socket_connect_timeout": 0.5,
                "socket_timeout": 0.5,
            }
        storage = storage_from_string(self.uri, **options)
        if not isinstance(storage, Storage) or not isinstance(storage, MovingWindowSupport):
            raise ValueError(f"{self.uri} is not an async storage with moving windows")
        self._storage = storage
        if RedisWindows.usable(storage):
            self._windows = RedisWindows(cast(RedisStorage, storage), self._version_key)
            if self._version is not None:
                self._version.confirmed_by_limiter = True

    @property
    def storage(self) -> MovingWindowSupport:
        if self._storage is None:
            raise RuntimeError("Limiter.start() has not run")
        return self._storage

    async def ping(self) -> bool:
        try:
            return bool(await cast(Storage, self.storage).check())
        except Exception:  # any driver error means "unreachable"
            return False

    async def charge(
        self, charges: list[tuple[Bucket, int]], *, expected_version: int | None = None
    ) -> Decision:
        """Consume each (bucket, cost), or nothing at all when one bucket lacks room.

        The decision reported is the first refusing bucket's, else the first bucket's. With
        `expected_version` (a principal trusted under the version seen last), CredentialsMoved
        when the storage holds another version, or cannot be read: nothing is charged then.
        """
        if self._breaker_open():
            return self._storage_failed(charges[0][0], None, expected_version)
        try:
            if self._windows is not None:
                return await self._charge_in_one_round_trip(charges, expected_version)
            # One bucket: its hit is atomic and all-or-nothing, so test() would only cost a
            # round trip. Several: test them all before consuming any.
            storage = self.storage
            if len(charges) > 1:
                for bucket, cost in charges:
                    _, used = await storage.get_moving_window(
                        bucket.key, bucket.amount, bucket.window_seconds
                    )
                    if used > bucket.amount - cost:
                        return await self._decision(bucket, allowed=False)
            for bucket, cost in charges:
                if not await storage.acquire_entry(
                    bucket.key, bucket.amount, bucket.window_seconds, amount=cost
                ):
                    # Lost a race for the last units between test() and hit().
                    return await self._decision(bucket, allowed=False)
            return await self._decision(charges[0][0], allowed=True)
        except (LimiterUnavailable, CredentialsMoved):
            raise
        except Exception as exc:  # storage down: fail open (counted) or closed, as configured
            return self._storage_failed(charges[0][0], exc, expected_version)

    async def _charge_in_one_round_trip(
        self, charges: list[tuple[Bucket, int]], expected_version: int | None
    ) -> Decision:
        assert self._windows is not None
        try:
            charged = await self._windows.charge(
                [(b.key, b.amount, b.window_seconds, cost) for b, cost in charges],
                now=self._clock(),
                expected_version=expected_version,
            )
        except VersionMoved as moved:
            if self._version is not None:
                self._version.seen(moved.version)
            raise CredentialsMoved(moved.version) from None
        if self._version is not None:
            self._version.seen(charged.version)
        bucket = charges[charged.refused - 1][0] if charged.refused else charges[0][0]
        return self._window(bucket, not charged.refused, charged.start, charged.used)

    async def peek(self, bucket: Bucket) -> Decision:
        if self._breaker_open():
            return self._storage_failed(bucket, None)
        try:
            return await self._decision(bucket, allowed=True)
        except (LimiterUnavailable, CredentialsMoved):
            raise
        except Exception as exc:
            return self._storage_failed(bucket, exc)

    async def _decision(self, bucket: Bucket, *, allowed: bool) -> Decision:
        start, used = await self.storage.get_moving_window(
            bucket.key, bucket.amount, bucket.window_seconds
        )
        return self._window(bucket, allowed, start, used)

    def _window(self, bucket: Bucket, allowed: bool, start: float | None, used: int) -> Decision:
        remaining = max(0, bucket.amount - used)
        if remaining >= bucket.amount or start is None:
            # Nothing in the window: a full quota is there now, and a full window from now.
            reset_at = self._clock() + bucket.window_seconds
        else:
            reset_at = start + bucket.window_seconds
        return Decision(allowed=allowed, bucket=bucket, remaining=remaining, reset_at=reset_at)

    def _breaker_open(self) -> bool:
        return self._clock() < self._down_until

    def _storage_failed(
        self, bucket: Bucket, exc: Exception | None, expected_version: int | None = None
    ) -> Decision:
        """Count the failure; after a real error, skip the storage for BREAKER_SECONDS so that
        an unreachable Redis costs one timeout, not one per request. A principal trusted
        under an unconfirmed version is verified again with the cache bypassed first."""
        if exc is not None:
            self._down_until = self._clock() + BREAKER_SECONDS
            logger.error("rate-limit storage %s failed: %r", self.uri.split("@")[-1], exc)
            if self._version is not None:
                self._version.unknown()
        if expected_version is not None and not self.fail_closed:
            raise CredentialsMoved(None) from exc
        self.storage_failures += 1
        if self.fail_closed:
            raise LimiterUnavailable() from exc
        return Decision(
            allowed=True,
            bucket=bucket,
            remaining=bucket.amount,
            reset_at=self._clock() + bucket.window_seconds,
        )

    async def close(self) -> None:
        if self._windows is not None:
            await self._windows.close()

    async def clear(self, bucket: Bucket) -> None:
        await cast(Storage, self.storage).clear(bucket.key)
