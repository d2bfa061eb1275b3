"""The per-request GraphQL context and the `Info` alias resolvers receive."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from strawberry.dataloader import DataLoader
from strawberry.types import Info as StrawberryInfo

from keyplane.auth.principal import Principal
from keyplane.models import Environment, User
from keyplane.ratelimit.limiter import Decision
from keyplane.resolvers.access import Access

if TYPE_CHECKING:
    from keyplane.services import Services


async def _load_users(ids: list[str]) -> list[User | None]:
    found = {user.id: user for user in await User.filter(id__in=ids)}
    return [found.get(i) for i in ids]


async def _load_environments(ids: list[str]) -> list[Environment | None]:
    found = {env.id: env for env in await Environment.filter(id__in=ids)}
    return [found.get(i) for i in ids]


@dataclass
class Loaders:
    user: DataLoader[str, User | None] = field(
        default_factory=lambda: DataLoader(load_fn=_load_users)
    )
    environment: DataLoader[str, Environment | None] = field(
        default_factory=lambda: DataLoader(load_fn=_load_environments)
    )


@dataclass
class Context:
    request: Request
    response: Any
    principal: Principal
    services: Services
    now: datetime
    access: Access
    loaders: Loaders = field(default_factory=Loaders)
    # The rate-limit decision that admitted this request (viewer.rateLimit reads it).
    rate_limit: Decision | None = None


Info = StrawberryInfo[Context, None]
