"""The per-request GraphQL context and the `Info` alias resolvers receive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from strawberry.types import Info as StrawberryInfo

from keyplane.access import Access
from keyplane.auth.principal import Principal
from keyplane.loaders import Loaders
from keyplane.ratelimit.limiter import Decision

if TYPE_CHECKING:
    from keyplane.schema.query_cache import ParsedQuery
    from keyplane.schema.viewer import Viewer
    from keyplane.services import Services


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
    # `viewer`, made once: every item of a batch shares this context, and asks the same.
    viewer: Viewer | None = None


Info = StrawberryInfo[Context, None]
