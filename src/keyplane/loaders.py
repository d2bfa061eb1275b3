"""Per-request DataLoaders, and the loader that answers a record already in memory at once."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import cached_property
from typing import TypeVar

from strawberry.dataloader import DataLoader

from keyplane.records import EnvironmentRecord, RecordLoaders, UserRecord
from keyplane.usage.counters import Counters, KeyCounters

R = TypeVar("R")


class KnownFirst(DataLoader[str, R | None]):
    """A DataLoader that answers at once, with no batch task, for a record already in memory
    (users and environments never change: RecordLoaders keeps every one it has read)."""

    def __init__(
        self,
        load_fn: Callable[[list[str]], Awaitable[list[R | None]]],
        known: Callable[[str], R | None],
    ) -> None:
        super().__init__(load_fn=load_fn)
        self._known = known

    def load(self, key: str) -> Awaitable[R | None]:
        value = self._known(key)
        if value is None:
            return super().load(key)
        future: asyncio.Future[R | None] = self.loop.create_future()
        future.set_result(value)
        return future


class Loaders:
    """Per-request DataLoaders: one batched query per kind of object, whatever the page size.
    Each is made when a resolver first asks for it (most requests need neither)."""

    def __init__(self, records: RecordLoaders, counters: Counters) -> None:
        self._records = records
        self._counters = counters

    @cached_property
    def user(self) -> DataLoader[str, UserRecord | None]:
        return KnownFirst(self._records.users, self._records.known_user)

    @cached_property
    def environment(self) -> DataLoader[str, EnvironmentRecord | None]:
        return KnownFirst(self._records.environments, self._records.known_environment)

    @cached_property
    def counters(self) -> DataLoader[str, KeyCounters]:
        """API keys' usage counters, stored plus unflushed, by key id."""
        return DataLoader(load_fn=self._counters.load)
