"""The HTTP edge: authentication, then rate limiting, then the GraphQL view; health endpoints.

Data flows one way: AuthenticationMiddleware resolves the caller (401 on refused credentials,
charged to the client IP's bucket); the view prices the operation(s), asks the limiter (429,
nothing runs), meters the key's usage and only then executes.

GraphQL over HTTP (the current draft): a request that accepts `application/graphql-response+json`
before `application/json` gets that media type back, and a request error (a document that does
not parse or validate, variables that do not fit, an operation refused before it ran: no `data`)
answers 400 without a `data` entry (as do the refusals made before anything ran: 401, 403, 429,
503, `as_requested`); `application/json` keeps the 200 every GraphQL answer has. A
mutation sent with GET answers 405 with `Allow: POST` before it is priced or run (charged one
unit, like every refused request).
"""

from __future__ import annotations

import functools
import hmac
import json
import time
from typing import Any

from cross_web import HTTPException
from graphql import OperationType
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET
from tortoise import connections

from keyplane.access import Access
from keyplane.auth.principal import ANONYMOUS, Principal
from keyplane.context import Context
from keyplane.db import database_fault
from keyplane.errors import (
    Forbidden,
    InvalidCredentials,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from keyplane.graphiql.page import graphiql_page
from keyplane.loaders import Loaders
from keyplane.permissions.checks import NO_RESTRICTIONS, CheckRequest
from keyplane.permissions.checks.ip_allowlist import IpDenied
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
JSON = "application/json"
GRAPHQL_RESPONSE = "application/graphql-response+json"
MUTATION_OVER_GET = MethodNotAllowed("A mutation must be sent with POST.")


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
                await as_requested(refused, scope)(scope, receive, send)
                return
        services = self.services
        authorization = _authorization(scope)
        try:
            principal = await services.authenticator.authenticate(authorization)
        except InvalidCredentials as refusal:
            response = as_requested(await refuse(scope, services, refusal), scope)
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


class RequestRefused(Exception):
    """A check about the request itself (permissions/checks/) refused it: no field runs."""

    def __init__(self, refusal: Forbidden | NotFound, decision: Decision) -> None:
        self.refusal = refusal
        self.decision = decision

    def response(self) -> Response:
        refusal = self.refusal
        body = {
            "data": None,
            "errors": [{"message": refusal.message, "extensions": refusal.extensions}],
        }
        status = 404 if isinstance(refusal, NotFound) else 403
        return JSONResponse(body, status, headers=rate_headers(self.decision, time.time()))


def _codes(result: ExecutionResult | list[ExecutionResult] | Any) -> set[object]:
    """The codes of the errors in a result, or in each result of a batch."""
    results = result if isinstance(result, list) else [result]
    return {
        (error.extensions or {}).get("code")
        for item in results
        if isinstance(item, ExecutionResult)
        for error in item.errors or ()
    }


@functools.lru_cache(maxsize=64)
def _prefers_graphql_response(accept: bytes) -> bool:
    """Whether an Accept header ranks `application/graphql-response+json` above
    `application/json` (and `*/*`, which means JSON): by quality, then by order."""
    ranked: list[tuple[float, int, bool]] = []
    for position, item in enumerate(accept.decode("latin-1").lower().split(",")):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        if media_type not in (GRAPHQL_RESPONSE, JSON, "application/*", "*/*"):
            continue
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranked.append((-quality, position, media_type == GRAPHQL_RESPONSE))
    return bool(ranked) and min(ranked)[2]


def wants_graphql_response(scope: Scope) -> bool:
    for name, value in scope["headers"]:  # ASGI header names are lower-case bytes
        if name == b"accept":
            return _prefers_graphql_response(value)
    return False


def as_requested(response: Response, scope: Scope) -> Response:
    """A refusal made before GraphQL ran (401, 403, 429, 503), in the media type the request
    asked for: under `application/graphql-response+json` nothing ran, so it has no `data`.
    Only refusals come here; answers to admitted requests are made by create_response."""
    if response.media_type != JSON or not wants_graphql_response(scope):
        return response
    body = json.loads(bytes(response.body))
    body.pop("data", None)
    headers = {
        name: value
        for name, value in response.headers.items()
        if name not in ("content-length", "content-type")
    }
    return JSONResponse(body, response.status_code, headers=headers, media_type=GRAPHQL_RESPONSE)


def _is_request_error(response: GraphQLHTTPResponse) -> bool:
    """Whether a GraphQL answer reports a request error: nothing ran, so nothing has a path
    (a field error always has one, even when it nulls the whole `data`), and no timeout (the
    operation ran, and was stopped)."""
    errors: list[dict[str, Any]] = response.get("errors") or []  # type: ignore[assignment]
    return (
        response.get("data") is None
        and bool(errors)
        and all(
            "path" not in error and (error.get("extensions") or {}).get("code") != "TIMEOUT"
            for error in errors
        )
    )


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

    async def render_graphql_ide(self, request: Request) -> Response:
        # GraphiQL from keyplane itself (keyplane/graphiql), never from a CDN.
        return graphiql_page()

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
        now = services.clock()
        return Context(
            request=request,
            response=response,
            principal=principal,
            services=services,
            now=now,
            access=Access(
                principal,
                records=services.records,
                ip=client_ip(request.scope, services.settings.trusted_proxies),
                uses=services.usage,
                now=now,
                credentials=services.credentials,
            ),
            loaders=Loaders(services.records, services.counters),
        )

    async def run(  # type: ignore[override]
        self, request: Request, context: Any = UNSET, root_value: Any = UNSET
    ) -> Response:
        try:
            return await super().run(request, context, root_value)
        except RateLimitExceeded as exceeded:
            return as_requested(too_many_requests(exceeded.decision, time.time()), request.scope)
        except RequestRefused as refused:
            return as_requested(refused.response(), request.scope)
        except LimiterUnavailable:
            return as_requested(limiter_unavailable(), request.scope)
        except InvalidCredentials as refusal:  # verified again when the version moved
            return as_requested(await refuse(request.scope, self.services, refusal), request.scope)
        except ServiceUnavailable:
            return as_requested(database_unavailable(), request.scope)
        except ClientDisconnect:
            # The client went away before sending its whole body: nobody is left to answer.
            return Response(status_code=400)
        except HTTPException as exc:
            # Strawberry's own refusals (bad JSON, batch too large, ...) and ours as typed JSON
            # errors, charged one unit like any request, so they carry the rate-limit headers too.
            headers = {}
            graphql_response = wants_graphql_response(request.scope)
            # 405: a mutation sent with GET (the router, or post_only.py in production, answers
            # every method but GET and POST before the view).
            if exc.status_code == 405:
                extensions: dict[str, Any] = MUTATION_OVER_GET.extensions
                headers["Allow"] = "POST"
            elif exc.status_code == 404:
                extensions = {"code": "NOT_FOUND"}
            else:
                extensions = {"code": "BAD_USER_INPUT", "field": "body"}
            error = {"message": exc.reason, "extensions": extensions}
            media_type = JSON
            body: dict[str, Any] = {"data": None, "errors": [error]}
            if exc.status_code == 405 or graphql_response:
                # A request error: nothing ran, so the answer has no `data` (as production's
                # transport refusals, post_only.py).
                del body["data"]
                if graphql_response:
                    media_type = GRAPHQL_RESPONSE
            try:
                decision = await self._refusal_decision(request)
            except LimiterUnavailable:
                return limiter_unavailable()
            except InvalidCredentials as refusal:
                return await refuse(request.scope, self.services, refusal)
            now = time.time()
            if not decision.allowed:
                return too_many_requests(decision, now)
            headers |= rate_headers(decision, now)
            return JSONResponse(body, exc.status_code, headers=headers, media_type=media_type)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        """Strawberry's answer, in the media type the request asked for (`execute_operation`
        notes it on the sub-response): under `application/graphql-response+json` a request
        error has no `data`, and answers 400 when it is not part of a batch."""
        if sub_response.media_type == GRAPHQL_RESPONSE:
            if isinstance(response_data, list):
                for item in response_data:
                    if _is_request_error(item):
                        del item["data"]
            elif _is_request_error(response_data):
                del response_data["data"]
                sub_response.status_code = 400
        response = super().create_response(response_data, sub_response)
        if sub_response.media_type == GRAPHQL_RESPONSE:
            response.headers["content-type"] = GRAPHQL_RESPONSE
        return response

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
        over_get = request.scope["method"] == "GET"
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
            if over_get and operation.node.operation is OperationType.MUTATION:
                raise HTTPException(405, MUTATION_OVER_GET.message)
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
        checks = context.services.checks
        if checks.request_checks and (
            not checks.request_checks_need_restrictions
            or (key is not None and key.restrictions is not NO_RESTRICTIONS)
        ):
            await self._check_request(context, items, decision)
        sub_response.raw_headers.extend(raw_rate_headers(decision, time.time()))
        if wants_graphql_response(request.scope):
            sub_response.media_type = GRAPHQL_RESPONSE  # read by create_response
        if key is not None:
            usage.admitted(key.key_id, key.environment_id, context.now)
        try:
            result = await super().execute_operation(
                request, request_adapter, request_data, context, root_value, sub_response
            )
        finally:
            # The viewer, made once and kept on the context for every item of a batch, holds
            # the context (its fields read it): a reference cycle, which kept each request's
            # context, request, response and everything they hold until the garbage collector
            # found them. Once the operations have run, nothing reads it.
            context.viewer = None
        if isinstance(result, ExecutionResult) and not result.errors:
            return result
        codes = _codes(result)
        if ServiceUnavailable.code in codes:
            # A database fault met anywhere in the operation(s) answers the whole request 503.
            raise ServiceUnavailable()
        if key is not None and "FORBIDDEN" in codes:
            usage.refused(key.key_id, key.environment_id, context.now, Refusal.FORBIDDEN)
        return result

    async def _check_request(
        self, context: Context, items: list[GraphQLRequestData], decision: Decision
    ) -> None:
        """The checks about the request itself (IP, origin...), once, before any field."""
        checks = context.services.checks
        principal = context.principal
        key = principal.key
        request = CheckRequest(
            principal=principal,
            operation=items[0].operation_name if len(items) == 1 else None,
            field=None,
            path=(),
            environment_id=None if key is None else key.environment_id,
            project_id=None if key is None else key.project_id,
            client_ip=context.access.ip,
            headers=context.request.headers,
            restrictions=NO_RESTRICTIONS if key is None else key.restrictions,
        )
        try:
            await checks.run(checks.request_checks, request)
        except (Forbidden, NotFound) as refusal:
            if key is not None:
                usage = context.services.usage
                known = (
                    None
                    if key.record is None
                    else RefusedKey(key.project_id, key.record.prefix, key.record.name)
                )
                if isinstance(refusal, IpDenied) and known is not None:
                    usage.ip_denied(
                        key.key_id, key.environment_id, context.now, ip=context.access.ip, key=known
                    )
                else:
                    usage.refused(key.key_id, key.environment_id, context.now, Refusal.FORBIDDEN)
            raise RequestRefused(refusal, decision) from None

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
