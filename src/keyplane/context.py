"""The per-request GraphQL context and the `Info` alias resolvers receive."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.requests import Request
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from keyplane.auth.lookups import EnvironmentRecord, RecordLoaders, UserRecord
from keyplane.auth.principal import Principal
from keyplane.ratelimit.limiter import Decision
from keyplane.resolvers.access import Access

if TYPE_CHECKING:
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


@dataclass
class Loaders:
    """Per-request DataLoaders: one batched query per kind of object, whatever the page size."""

    user: DataLoader[str, UserRecord | None]
    environment: DataLoader[str, EnvironmentRecord | None]

    @classmethod
    def over(cls, records: RecordLoaders) -> Loaders:
        return cls(
            user=KnownFirst(records.users, records.known_user),
            environment=KnownFirst(records.environments, records.known_environment),
        )


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


Info = StrawberryInfo[Context, None]
