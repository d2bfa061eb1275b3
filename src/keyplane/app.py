"""create_app(settings): routes, middleware and the lifespan that owns the ORM."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from tortoise.contrib.starlette import RegisterTortoise

from keyplane.auth.dashboard import utcnow
from keyplane.auth.oauth import JwksCache
from keyplane.auth.passwords import Passwords
from keyplane.body_limit import MAX_BODY_BYTES, BodyLimit
from keyplane.db import apply_migrations, tortoise_config
from keyplane.http import AuthenticationMiddleware, GraphQLView, healthz, metrics, readyz
from keyplane.post_only import PostOnly
from keyplane.request_id import RequestId
from keyplane.schema.engine import QueryPolicy
from keyplane.schema.root import build_schema
from keyplane.services import build_services
from keyplane.settings import Settings
from keyplane.unavailable import InFlightLimit

_frozen = False


def _freeze_startup_objects() -> None:
    """Everything loaded by the first start-up (schema, models, modules) lives as long as the
    process: keep it out of the collector's full passes, which otherwise walk it all again
    every few hundred requests. Once per process (tests start many apps)."""
    global _frozen
    if not _frozen:
        gc.freeze()
        _frozen = True


def create_app(
    settings: Settings,
    *,
    passwords: Passwords | None = None,
    jwks: JwksCache | None = None,
    clock: Callable[[], datetime] = utcnow,
    migrate: bool = True,
) -> Starlette:
    services = build_services(settings, passwords=passwords, jwks=jwks, clock=clock)
    schema = build_schema(
        max_batch=settings.max_batch,
        policy=QueryPolicy(
            limits=settings.query_limits,
            timeout_seconds=settings.operation_timeout_seconds,
            production=not settings.development,
        ),
    )
    view = GraphQLView(
        schema,
        services,
        graphql_ide="graphiql" if settings.development else None,
        allow_queries_via_get=settings.development,
    )
    graphql_middleware = [Middleware(AuthenticationMiddleware, services=services)]
    if not settings.development:
        graphql_middleware.insert(0, Middleware(PostOnly))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if migrate:
            # `keyplane serve` has migrated before forking; this finds nothing to do then,
            # and makes a bare `uvicorn keyplane.main:app` safe too (it runs under a lock).
            await apply_migrations(settings.database_url)
        async with RegisterTortoise(app, config=tortoise_config(settings.database_url)):
            services.limiter.start()
            services.usage.start()
            services.deadlines.start()
            app.state.services = services
            _freeze_startup_objects()
            try:
                yield
            finally:
                await services.deadlines.stop()
                await services.renderer.stop()  # kills the render children, if any started
                await services.credentials.close()
                # Graceful shutdown (SIGTERM): the buffered usage reaches the database first.
                await services.usage.stop()

    application = Starlette(
        routes=[
            Route(
                "/graphql",
                view,
                # Production takes every method, so that PostOnly answers the others with a
                # coded JSON 405 rather than the router's plain-text one.
                methods=["GET", "POST"] if settings.development else None,
                middleware=graphql_middleware,
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(RequestId),  # outermost: every answer below carries the id
            Middleware(InFlightLimit, limit=settings.max_in_flight),
            Middleware(BodyLimit, max_body_size=MAX_BODY_BYTES),
        ],
    )
    application.state.schema = schema  # its query cache, for tests and tools
    return application
