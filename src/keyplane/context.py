"""The per-request GraphQL context and the `Info` alias resolvers receive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from keyplane.auth.lookups import EnvironmentRecord, RecordLoaders, UserRecord
from keyplane.auth.principal import Principal
from keyplane.ratelimit.limiter import Decision
from keyplane.resolvers.access import Access

if TYPE_CHECKING:
    from keyplane.services import Services


@dataclass
class Loaders:
    """Per-request DataLoaders: one batched query per kind of object, whatever the page size."""

    user: DataLoader[str, UserRecord | None]
    environment: DataLoader[str, EnvironmentRecord | None]

    @classmethod
    def over(cls, records: RecordLoaders) -> Loaders:
        return cls(
            user=DataLoader(load_fn=records.users),
            environment=DataLoader(load_fn=records.environments),
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
