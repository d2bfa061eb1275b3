"""The HTTP edge: authentication middleware, the GraphQL view and the health endpoints."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from tortoise import connections

from keyplane.auth.principal import ANONYMOUS, Principal
from keyplane.context import Context
from keyplane.errors import InvalidCredentials
from keyplane.resolvers.access import Access
from keyplane.services import Services

UNAUTHORIZED_BODY = {
    "data": None,
    "errors": [
        {
            "message": InvalidCredentials.default_message,
            "extensions": {"code": InvalidCredentials.code},
        }
    ],
}
UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


def services_of(scope: Scope) -> Services:
    services: Services = scope["app"].state.services
    return services


class AuthenticationMiddleware:
    """Resolves the caller before GraphQL runs; refused credentials end the request with 401.

    Every cause (unknown, malformed, revoked, expired, wrong signature...) gets the same body,
    so the response tells an attacker nothing about which keys exist.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        services = services_of(scope)
        authorization = Headers(scope=scope).get("authorization")
        try:
            principal = await services.authenticator.authenticate(authorization)
        except InvalidCredentials:
            response = JSONResponse(UNAUTHORIZED_BODY, 401, headers=UNAUTHORIZED_HEADERS)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        if principal.key is not None:
            await services.usage.record(principal.key.key_id, services.clock())
        await self.app(scope, receive, send)


class GraphQLView(GraphQL[Context, None]):
    async def get_context(self, request: Request, response: Any) -> Context:  # type: ignore[override]
        services = services_of(request.scope)
        principal: Principal = request.scope.get("state", {}).get("principal", ANONYMOUS)
        return Context(
            request=request,
            response=response,
            principal=principal,
            services=services,
            now=services.clock(),
            access=Access(principal),
        )


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        await connections.get("default").execute_query("SELECT 1")
    except Exception as exc:  # any failure means "not ready", whatever the driver raised
        return JSONResponse({"status": "unavailable", "database": str(type(exc).__name__)}, 503)
    return JSONResponse({"status": "ok", "database": "ok"})
