"""The per-request GraphQL context and the `Info` alias resolvers receive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from keyplane.auth.lookups import EnvironmentRecord, RecordLoaders, UserRecord
from keyplane.auth.principal import Principal
from keyplane.ratelimit.limiter import Decision
from keyplane.resolvers.access import Access

if TYPE_CHECKING:
    from keyplane.schema.query_cache import ParsedQuery
    from keyplane.services import Services


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

    def __init__(self, records: RecordLoaders) -> None:
        self._records = records

    @cached_property
    def user(self) -> DataLoader[str, UserRecord | None]:
        return KnownFirst(self._records.users, self._records.known_user)

    @cached_property
    def environment(self) -> DataLoader[str, EnvironmentRecord | None]:
        return KnownFirst(self._records.environments, self._records.known_environment)


@dataclass
class Context:
    request: Request
    response: Any
    principal: Principal
    services: Services
    now: datetime
    access: Access
    loaders: Loaders
    # The rate-limit decision that admitted this request (viewer.rateLimit reads it).
    rate_limit: Decision | None = None
    # Queries as the view parsed them to price them, for the engine to run (schema/engine.py):
    # the last one (a batch often repeats one document) and those too long for the cache.
    last_query: str | None = None
    last_parsed: ParsedQuery | None = None
    long_queries: dict[str, ParsedQuery] | None = None


Info = StrawberryInfo[Context, None]
