"""The HTTP edge: authentication, then rate limiting, then the GraphQL view; health endpoints.

Data flows one way: AuthenticationMiddleware resolves the caller (401 on refused credentials,
charged to the client IP's bucket); the view prices the operation(s), asks the limiter (429,
nothing runs), meters the key's usage and only then executes.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from cross_web import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET
from tortoise import connections

from keyplane.access import Access
from keyplane.auth.principal import ANONYMOUS, Principal
from keyplane.context import Context
from keyplane.db import database_fault
from keyplane.errors import InvalidCredentials, ServiceUnavailable
from keyplane.loaders import Loaders
from keyplane.post_only import transport_refusal
from keyplane.ratelimit.client_ip import client_ip
from keyplane.ratelimit.headers import (
    limiter_unavailable,
    rate_headers,
    raw_rate_headers,
    too_many_requests,
)
from keyplane.ratelimit.limiter import CredentialsMoved, Decision, LimiterUnavailable
from keyplane.ratelimit.tiers import Tier
from keyplane.records import KeyRecord
from keyplane.schema.engine import KeyplaneSchema
from keyplane.schema.query_cache import AMBIGUOUS, MAX_KEPT_QUERY_CHARS, Operation, ParsedQuery
from keyplane.services import Services
from keyplane.settings import Settings
from keyplane.unavailable import database_unavailable
from keyplane.usage.buffer import Refusal, RefusedKey

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


def _authorization(scope: Scope) -> str | None:
    for name, value in scope["headers"]:  # ASGI header names are lower-case bytes
        if name == b"authorization":
            header: str = value.decode("latin-1")
            return header
    return None


async def charge_confirmed(
    services: Services, scope: Scope, principal: Principal, *, units: int = 1, ip_units: int = 0
) -> tuple[Decision, Principal]:
    """`charge`, and the principal it was charged to. A principal trusted under the version
    this worker saw last is confirmed in the limiter's round trip; when the version moved,
    nothing was charged: the credential is verified again under the version read (a refusal
    raises InvalidCredentials: nothing charged to the key) and then charged (auth/changes.py)."""
    ip = client_ip(scope, services.settings.trusted_proxies)
    try:
        return await charge(services, principal, ip, units=units, ip_units=ip_units), principal
    except CredentialsMoved as moved:
        principal = await services.authenticator.authenticate_under(
            _authorization(scope), moved.version
        )
        scope.setdefault("state", {})["principal"] = principal
        return await charge(services, principal, ip, units=units, ip_units=ip_units), principal


async def charge(
    services: Services, principal: Principal, ip: str, *, units: int = 1, ip_units: int = 0
) -> Decision:
    """Price a request against the caller's bucket (and the IP's, for signUp/logIn), counting
    refusals in /metrics. Every path that admits or refuses a request goes through here."""
    bucket = services.rates.bucket_for(principal, ip)
    charges = [(bucket, units)]
    if ip_units and bucket.tier is not Tier.ANONYMOUS:
        charges.append((services.rates.ip_bucket(ip), ip_units))
    decision = await services.limiter.charge(charges, expected_version=principal.version)
    if not decision.allowed:
        services.metrics.rate_limited[decision.bucket.tier.value] += 1
    return decision


class AuthenticationMiddleware:
    """Resolves the caller before GraphQL runs; refused credentials end the request with 401.

    Every cause (unknown, malformed, revoked, expired, wrong signature...) gets the same body,
    so the response tells an attacker nothing about which keys exist. Each refusal costs one
    from the client IP's anonymous bucket: guessing is throttled like any anonymous caller, and
    once that bucket is empty the answer is 429.
    """

    def __init__(self, app: ASGIApp, services: Services, *, post_only: bool = False) -> None:
        self.app = app
        self.services = services
        # Production: a request that is not a JSON POST is refused before it is authenticated.
        self.post_only = post_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.post_only:
            refused = transport_refusal(scope)
            if refused is not None:
                await refused(scope, receive, send)
                return
        services = self.services
        authorization = _authorization(scope)
        try:
            principal = await services.authenticator.authenticate(authorization)
        except InvalidCredentials as refusal:
            response = await refuse(scope, services, refusal)
            await response(scope, receive, send)
            return
        except ServiceUnavailable:
            await database_unavailable()(scope, receive, send)
            return
        except Exception as exc:
            # The readers' ORM calls (an OAuth identity linked on first sight) meet the same
            # locked or unreachable database as the lookups do: 503, never a 500.
            if not database_fault(exc):
                raise
            await database_unavailable()(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def refuse(scope: Scope, services: Services, refusal: InvalidCredentials) -> Response:
    """401 for refused credentials, charged to the client IP's anonymous bucket."""
    services.metrics.auth_failures[refusal.reason] += 1
    ip = client_ip(scope, services.settings.trusted_proxies)
    record = refusal.refused_key
    if isinstance(record, KeyRecord):
        services.usage.refused(
            record.id,
            record.environment_id,
            services.clock(),
            Refusal.UNAUTHORIZED,
            ip=ip,
            key=RefusedKey(record.project_id, record.prefix, record.name),
        )
    try:
        decision = await charge(services, ANONYMOUS, ip)
    except LimiterUnavailable:
        return limiter_unavailable()
    now = time.time()
    if not decision.allowed:
        return too_many_requests(decision, now)
    headers = UNAUTHORIZED_HEADERS | rate_headers(decision, now)
    return JSONResponse(UNAUTHORIZED_BODY, 401, headers=headers)


class RateLimitExceeded(Exception):
    def __init__(self, decision: Decision) -> None:
        self.decision = decision


def _codes(result: ExecutionResult | list[ExecutionResult] | Any) -> set[object]:
    """The codes of the errors in a result, or in each result of a batch."""
    results = result if isinstance(result, list) else [result]
    return {
        (error.extensions or {}).get("code")
        for item in results
        if isinstance(item, ExecutionResult)
        for error in item.errors or ()
    }


def _check_body(value: object, *, escapes: bool) -> None:
    """A GraphQL POST body is an object, or a non-empty list of objects, of valid text.

    Text read as UTF-8 holds no lone surrogate; only a `\\u` escape can put one in a string,
    so the strings are walked only when the body has one."""
    items = value if isinstance(value, list) else [value]
    if not items or not all(isinstance(item, dict) for item in items):
        raise HTTPException(400, "The body must be a JSON object, or a list of JSON objects.")
    if not escapes:
        return
    stack: list[object] = list(items)
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if not node.isascii():
                try:
                    node.encode("utf-8")
                except UnicodeEncodeError as exc:
                    raise HTTPException(
                        400, "The body holds a string that is not valid Unicode."
                    ) from exc
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


class GraphQLView(GraphQL[Context, None]):
    def __init__(self, schema: BaseSchema, services: Services, **options: Any) -> None:
        super().__init__(schema, **options)
        self.services = services

    def _parsed(self, query: object, context: Context) -> ParsedQuery:
        """The query parsed (with its token limit) once for pricing and execution alike: the
        engine finds it on the context (the last one parsed, and those too long for the cache),
        else in the cache."""
        schema = self.schema
        assert isinstance(schema, KeyplaneSchema)
        text = query if isinstance(query, str) else ""
        if text == context.last_query and context.last_parsed is not None:
            return context.last_parsed  # a batch repeating one document
        parsed = schema.queries.parsed(text)
        context.last_query, context.last_parsed = text, parsed
        if len(text) > MAX_KEPT_QUERY_CHARS:  # not kept by the cache: kept for this request
            if context.long_queries is None:
                context.long_queries = {}
            context.long_queries[text] = parsed
        return parsed

    def decode_json(self, data: str | bytes) -> object:
        try:
            value = json.loads(data)
        except UnicodeDecodeError as exc:
            raise HTTPException(400, "The body is not UTF-8 text.") from exc
        except RecursionError as exc:
            raise HTTPException(400, "The body nests too deeply.") from exc
        except ValueError as exc:  # not JSON, or an integer of over 4,300 digits
            raise HTTPException(
                400, "The body is not valid JSON, or holds a number too large."
            ) from exc
        escapes = b"\\u" in data if isinstance(data, bytes) else "\\u" in data
        _check_body(value, escapes=escapes)
        return value

    async def get_context(self, request: Request, response: Any) -> Context:  # type: ignore[override]
        services = self.services
        principal: Principal = request.scope.get("state", {}).get("principal", ANONYMOUS)
        return Context(
            request=request,
            response=response,
            principal=principal,
            services=services,
            now=services.clock(),
            access=Access(
                principal,
                records=services.records,
                ip=client_ip(request.scope, services.settings.trusted_proxies),
            ),
            loaders=Loaders(services.records, services.counters),
        )

    async def run(  # type: ignore[override]
        self, request: Request, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response:
        try:
            return await super().run(request, context, root_value)
        except RateLimitExceeded as exceeded:
            return too_many_requests(exceeded.decision, time.time())
        except LimiterUnavailable:
            return limiter_unavailable()
        except InvalidCredentials as refusal:  # verified again when the version moved
            return await refuse(request.scope, self.services, refusal)
        except ServiceUnavailable:
            return database_unavailable()
        except ClientDisconnect:
            # The client went away before sending its whole body: nobody is left to answer.
            return Response(status_code=400)
        except HTTPException as exc:
            # Strawberry's own refusals (bad JSON, batch too large, ...) as typed JSON errors,
            # charged one unit like any request, so they carry the rate-limit headers too.
            code = "NOT_FOUND" if exc.status_code == 404 else "BAD_USER_INPUT"
            extensions = {"code": code} | ({"field": "body"} if code == "BAD_USER_INPUT" else {})
            body = {"data": None, "errors": [{"message": exc.reason, "extensions": extensions}]}
            try:
                decision = await self._refusal_decision(request)
            except LimiterUnavailable:
                return limiter_unavailable()
            except InvalidCredentials as refusal:
                return await refuse(request.scope, self.services, refusal)
            now = time.time()
            if not decision.allowed:
                return too_many_requests(decision, now)
            return JSONResponse(body, exc.status_code, headers=rate_headers(decision, now))

    async def _refusal_decision(self, request: Request) -> Decision:
        state = request.scope.setdefault("state", {})
        charged: Decision | None = state.get("rate_limit")
        if charged is not None:  # priced and admitted before GraphQL refused it
            return charged
        principal: Principal = state.get("principal", ANONYMOUS)
        decision, _ = await charge_confirmed(self.services, request.scope, principal)
        return decision

    async def execute_operation(
        self,
        request: Request,
        request_adapter: Any,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: Context,
        root_value: Any,
        sub_response: Response,
    ) -> Any:
        items = request_data if isinstance(request_data, list) else [request_data]
        units = ip_units = 0
        for item in items:
            operation = self._parsed(item.query, context).operation(item.operation_name)
            if operation == AMBIGUOUS:
                # Priced and run must be the same operation: name it (GraphQL spec, 6.1).
                raise HTTPException(
                    400, "The document holds several operations: say which with operationName."
                )
            if not isinstance(operation, Operation):  # unparsable, or no such operation
                units += 1
                continue
            if len(items) > 1 and operation.is_subscription:
                raise HTTPException(400, "Subscriptions cannot be sent in a batch.")
            units += operation.units
            ip_units += operation.ip_units
        decision = await self._charge(context, units=units, ip_units=ip_units)
        key = context.principal.key
        usage = context.services.usage
        if not decision.allowed:
            if key is not None:
                usage.refused(
                    key.key_id,
                    key.environment_id,
                    context.now,
                    Refusal.RATE_LIMITED,
                    ip=context.access.ip,
                    key=None
                    if key.record is None
                    else RefusedKey(key.project_id, key.record.prefix, key.record.name),
                )
            raise RateLimitExceeded(decision)
        sub_response.raw_headers.extend(raw_rate_headers(decision, time.time()))
        if key is not None:
            usage.admitted(key.key_id, key.environment_id, context.now)
        result = await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if isinstance(result, ExecutionResult) and not result.errors:
            return result
        codes = _codes(result)
        if ServiceUnavailable.code in codes:
            # A database fault met anywhere in the operation(s) answers the whole request 503.
            raise ServiceUnavailable()
        if key is not None and "FORBIDDEN" in codes:
            usage.refused(key.key_id, key.environment_id, context.now, Refusal.FORBIDDEN)
        return result

    async def _charge(self, context: Context, *, units: int, ip_units: int) -> Decision:
        decision, principal = await charge_confirmed(
            context.services,
            context.request.scope,
            context.principal,
            units=units,
            ip_units=ip_units,
        )
        if principal is not context.principal:  # verified again: the version had moved
            context.principal = principal
            context.access = Access(
                principal, records=context.services.records, ip=context.access.ip
            )
        context.rate_limit = decision
        context.request.scope.setdefault("state", {})["rate_limit"] = decision
        return decision


async def healthz(request: Request) -> Response:
    limiter = services_of(request.scope).limiter
    return JSONResponse({"status": "ok", "rateLimitStorageFailures": limiter.storage_failures})


def metrics_allowed(settings: Settings, authorization: str | None) -> bool:
    """Open in development; in production only to `Bearer $KEYPLANE_METRICS_TOKEN`."""
    if settings.development:
        return True
    token = settings.metrics_token
    if token is None or authorization is None:
        return False
    expected = f"Bearer {token}".encode()
    return hmac.compare_digest(authorization.encode("latin-1"), expected)


async def metrics(request: Request) -> Response:
    services = services_of(request.scope)
    if not metrics_allowed(services.settings, request.headers.get("authorization")):
        # The router's own answer for a path that does not exist: nothing tells it apart.
        return PlainTextResponse("Not Found", 404)
    text = services.metrics.render(
        rate_limit_storage_failures=services.limiter.storage_failures,
        usage_pending_keys=services.usage.pending_key_count(),
        credential_version_failures=services.credentials.change_failures,
    )
    return PlainTextResponse(text, media_type="text/plain; version=0.0.4")


async def readyz(request: Request) -> Response:
    services = services_of(request.scope)
    checks: dict[str, str] = {}
    try:
        await connections.get("default").execute_query("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # any failure means "not ready", whatever the driver raised
        checks["database"] = f"unavailable ({type(exc).__name__})"
    storage_ok = await services.limiter.ping()
    if storage_ok:
        checks["rateLimitStorage"] = "ok"
    elif services.limiter.fail_closed:
        checks["rateLimitStorage"] = "unavailable"
    else:
        checks["rateLimitStorage"] = "unavailable (failing open)"
    ready = checks["database"] == "ok" and (storage_ok or not services.limiter.fail_closed)
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, 200 if ready else 503
    )
