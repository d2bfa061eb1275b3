"""create_app(settings): routes, middleware and the lifespan that owns the ORM."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from tortoise.contrib.starlette import RegisterTortoise

from keyplane.auth.dashboard import utcnow
from keyplane.auth.oauth import JwksCache
from keyplane.auth.passwords import Passwords
from keyplane.db import apply_migrations, tortoise_config
from keyplane.edge import Edge
from keyplane.graphiql.page import assets_mount
from keyplane.http import AuthenticationMiddleware, GraphQLView, healthz, metrics, readyz
from keyplane.permissions.checks import Check
from keyplane.schema.engine import QueryPolicy, fast_http_view
from keyplane.schema.root import build_schema
from keyplane.services import build_services
from keyplane.settings import Settings

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
    checks: Sequence[Check] = (),
) -> Starlette:
    """The app; `checks` are run as KEYPLANE_CHECKS says (permissions/checks/)."""
    services = build_services(settings, passwords=passwords, jwks=jwks, clock=clock, checks=checks)
    fast_http_view()
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
        # In production every GET is refused before it gets here; allowing them here
        # spares Strawberry a look at every request's method.
        allow_queries_via_get=True,
    )

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
                await services.limiter.close()
                # Graceful shutdown (SIGTERM): the buffered usage reaches the database first.
                await services.usage.stop()

    application = Starlette(
        routes=[
            Route(
                "/graphql",
                view,
                # Production takes every method, so that post_only.transport_refusal answers
                # the others with a coded JSON 405 rather than the router's plain-text one.
                methods=["GET", "POST"] if settings.development else None,
                middleware=[
                    Middleware(
                        AuthenticationMiddleware,
                        services=services,
                        post_only=not settings.development,
                    )
                ],
            ),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            # GraphiQL's scripts and styles, served where GraphiQL is (development only).
            *([assets_mount()] if settings.development else []),
        ],
        lifespan=lifespan,
        middleware=[
            # Request id, CORS, admission (in flight, queued) and body limit, in one layer,
            # outermost.
            Middleware(
                Edge,
                max_in_flight=settings.max_in_flight,
                max_queued=settings.max_queued,
                max_queue_wait=settings.max_queue_wait_ms / 1000,
                cors_origins=settings.cors_origins,
            ),
        ],
    )
    application.state.schema = schema  # its query cache, for tests and tools
    return application
