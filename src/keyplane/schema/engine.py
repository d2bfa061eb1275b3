"""How an operation is admitted and run: limits, validation, introspection, timeout, masking.

KeyplaneSchema is Strawberry's schema with four changes (the third to a private hook):

- `execute` admits the operation first (schema/query_cache.py: tokens, aliases, depth, repeated
  selections, static cost, then validation stopping after a few errors, then introspection,
  which the production profile opens to dashboard sessions only). A refused operation never
  reaches Strawberry, so nothing parses it again.
- An admitted operation runs under a time limit (KEYPLANE_OPERATION_TIMEOUT_SECONDS, kept by
  the app's deadlines.Deadlines watcher, or asyncio.timeout where there is none); when it is
  over, what is still running is cancelled (each mutation's transaction rolls back) and the
  answer is the TIMEOUT error.
- `_create_execution_context` (Strawberry's private hook) hands Strawberry the document parsed
  and validated here, so that it neither parses nor validates again; the depth rule is ours
  (query_cache.py), not an extension: any schema extension costs every operation four hook
  contexts.
- An admitted query or mutation runs straight on graphql-core's `execute`, with what
  Strawberry's `execute` would hand it (the executor class, Strawberry's `is_awaitable`, the
  operation's extensions), while the schema has no extension (`get_extensions()` is empty):
  Strawberry's own `execute` would add only an extension runner with four empty hook contexts,
  an empty middleware manager and its execution-context object. Keyed viewer 962,759 ->
  852,134 instructions a request (11.5 %). Anything else (a subscription, a type the view
  does not allow, a document with no such operation) still goes through Strawberry, which
  says so as it always has.

Every result carries `extensions.cost = {requested, maximum}`, and its errors are coded and
masked (schema/errors.py) on the finished result.

Library internals: every private attribute or undocumented name keyplane uses from Strawberry,
graphql-core and limits is listed here, with where, why and what it earns, and each is held to
its shape by tests/test_library_contracts.py, so that an upgrade fails there, by name, and not
in a request. pyproject.toml bounds each library to the minor version constraints.txt locks.
A hack that only saves time stays only while `make bench-instructions` shows it earning at least
5 % on a target scenario (viewer, 20-key page, batch); figures are instructions per request of
the keyplane side, with and without it, measured on 2026-12-02
(bench/instructions.py, each hack turned off alone; one sample moves by up to ~3 %).

Strawberry 0.341
- `Schema._create_execution_context` (here, private): the hook that hands Strawberry the
  document parsed and validated by `execute`; Strawberry skips its own parse and validation when
  the context already has `graphql_document` and `pre_execution_errors`. Pricing needs the tree
  before the operation runs, so without it every request is parsed and validated twice
  (validation is most of a small request's cost). Not measured alone.
- `Schema._schema` (here, private): graphql-core's schema, which the query cache validates and
  prices against (and `_execute_directly` runs on). No public accessor exists.
- `Schema._execute_operation`'s arguments to graphql-core, `DEFAULT_ALLOWED_OPERATION_TYPES`
  and `strawberry.execution.is_awaitable.optimized_is_awaitable` (undocumented):
  `_execute_directly` passes graphql-core what Strawberry passes (see above).
- `strawberry.http.async_base_view.parse_content_type` and `.SubscriptionExecutionResult`,
  two module names Strawberry's HTTP view reads on every request, replaced by
  `fast_http_view()`: the first builds an `email.message.Message` to split a Content-Type
  header (it is now cached by header value), the second is a runtime-checkable Protocol whose
  `isinstance` walks `inspect.getattr_static` over every result (now
  `collections.abc.AsyncIterator`, which checks the same two methods and caches its answer per
  type). Together about 5 % of a small request's instructions (anonymous `{ __typename }`).
- `MaskErrors._process_errors` and `._process_result` (schema/errors.py, private): the masking
  runs the base class's per-error pass and replaces its per-result pass, whose `isinstance`
  against a runtime-checkable Protocol cost ~10 µs a request. Kept for correctness first: it is
  how coded errors are spared and unexpected ones masked.
- `AsyncBaseHTTPView.execute_operation` (http.py, undocumented): overridden to price, charge
  and refuse each request's operations before Strawberry runs them (the rate limit's 429).

graphql-core 3.3
- The texts of three messages: "Document contains more than N tokens. Parsing aborted."
  (query_cache.py tells the token limit from other syntax errors), the " Did you mean ...?"
  suffix (schema/errors.py strips it in the production profile) and the "Variable '$name'"
  prefix (schema/errors.py names the refused variable in `extensions.field`).
- `ExecutionContext.collect_subfields`, `graphql.execution.collect_fields.CollectedFields`,
  `FieldDetailsList` and `FieldDetails.defer_usage`/`.fragment_variable_values` (not exported;
  schema/executor.py, through Strawberry's `StrawberryGraphQLCoreExecutionContext`): sub-field
  collections kept across requests. Without -> with: JWT viewer 1,061k -> 991k (7.1 %; again
  1,076k -> 1,014k, 6.1 %), API-key viewer 1,082k -> 1,055k (2.6 %), OAuth viewer 1,063k ->
  1,028k (3.4 %), 20-key page 17.10M -> 16.82M (1.7 %), batch 17.99M -> 17.24M (4.3 %). Kept:
  over 5 % on the JWT viewer twice.
- `ExecutionContext.execute_field` (documented private; schema/leaf_fields.py, mixed into
  schema/executor.py's `Executor`), Strawberry's `_is_default` mark on a plain field's resolver
  and the field's `default_resolver`: a plain leaf field (no resolver, extension or argument)
  with a plain value is read and coerced directly, and a plain object field holding an
  instance of its type's class has its sub-fields run directly (`collect_and_execute_subfields`,
  `handle_field_error`); anything else, errors included, goes through graphql-core. Without ->
  with: 20-key page (dashboard) 18.45M -> 12.20M (leaves, 34 %) -> 10.61M (objects, 13 %).
- `Executor.async_helpers` (graphql-core builds it in `__init__` from the executor's bound
  `gather_async_work` and `track_async_work`): schema/executor.py rebuilds it from the same two
  methods reached through a weak reference, so that no request leaves a reference cycle for
  the garbage collector (tests/test_request_garbage.py).
- A resolved value that is an exception is that field's (or list item's) error, and an
  awaitable value is awaited: schema/node.py answers a refused id of `nodes` with its error,
  schema/user.py an unreadable email with an awaitable that raises, so a readable one stays a
  plain value. Documented in graphql-core's code only.
limits 5.8
- `MemoryStorage._MemoryStorage__schedule_expiry` (ratelimit/memory.py, private and
  name-mangled), the state its clean-up reads (`events`, `locks`, `expirations`, `storage`,
  `timer`, entries' `expiry`), and the wrappers limits puts on its storage methods, which
  `inspect.unwrap` removes: the clean-up paced instead of run after every hit. Without -> with:
  API-key viewer 1,108k -> 1,055k (5.0 %), JWT viewer 1,086k -> 991k (9.5 %), OAuth viewer
  1,014k -> 1,028k (-1.4 %), 20-key page 17.31M -> 16.82M (2.9 %), batch 17.42M -> 17.24M
  (1.0 %). Kept: 5 % or more on two viewers.
- limits' memory moving window is replaced, not patched (ratelimit/memory.py): the same
  algorithm and answers (tested against limits' own, hit for hit), its entries kept oldest
  first in an array, so a hit near a 10,000/minute limit costs what one near 100 does
  (bench/instructions.py limits table: 0.950 -> 0.985); `incr`/`get` and the clean-up hook stay.
- limits' async Redis storage's `bridge` (redis-py `RedispyBridge`): `get_connection()` and
  `prefixed_key()` (ratelimit/redis_window.py, undocumented): one Lua script on limits' own
  connection and keys does the credentials' version, the acquire and the read-back, one round
  trip a request instead of three (a GET and two EVALSHA).
- `limits.limits.safe_string` and the layout of `RateLimitItem.key_for` (ratelimit/tiers.py,
  not exported): a bucket's key is limits' own without the amount, so that a key whose limit
  changes keeps what it spent this minute. Behaviour, not speed.

uvicorn 0.54 (held by tests/test_security_connections.py, which starts real servers)
- `HttpToolsProtocol` and `H11Protocol`'s hooks (`connection_made`, `connection_lost`,
  `data_received`, `on_headers_complete`, `on_response_complete`) and attributes (`loop`,
  `transport`, `cycle.response_complete`, h11's `conn`), subclassed by connections.py for the
  request-head deadline uvicorn lacks. Security, not speed.
"""

from __future__ import annotations

import asyncio
import collections.abc
import functools
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from inspect import isawaitable
from typing import Any, TypeGuard, cast

import strawberry
import strawberry.http.async_base_view
from graphql import DocumentNode, GraphQLError, execute
from graphql import OperationType as GraphQLOperationType
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types.execution import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from keyplane.auth.principal import AuthKind
from keyplane.deadlines import Deadlines
from keyplane.errors import Forbidden, KeyplaneError, OperationTimeout, QueryTooComplex
from keyplane.schema.errors import MaskInternalErrors
from keyplane.schema.query_cache import (
    MAX_REPEATED_SELECTIONS,
    Operation,
    ParsedQuery,
    QueryCache,
)
from keyplane.settings import QueryLimits

# The operations `_execute_directly` runs, as the types Strawberry's view allows.
_RUN_DIRECTLY = {
    GraphQLOperationType.QUERY: OperationType.QUERY,
    GraphQLOperationType.MUTATION: OperationType.MUTATION,
}


# Strawberry's faster is_awaitable, as its `execute` hands it to graphql-core (typed as a
# TypeGuard there, as a bool here).
_IS_AWAITABLE = cast("Callable[[Any], TypeGuard[Awaitable[Any]]]", optimized_is_awaitable)


def fast_http_view() -> None:
    """Answer Strawberry's per-request content-type split and subscription check from caches
    (module docstring). Idempotent; the answers are the same as Strawberry's own."""
    view: Any = strawberry.http.async_base_view  # its names, not its exports, are patched
    if not hasattr(view.parse_content_type, "cache_info"):
        view.parse_content_type = functools.lru_cache(maxsize=64)(view.parse_content_type)
    view.SubscriptionExecutionResult = collections.abc.AsyncIterator


@dataclass(frozen=True, slots=True)
class QueryPolicy:
    """Everything that bounds one operation, from Settings."""

    limits: QueryLimits = field(default_factory=QueryLimits)
    timeout_seconds: float = 10.0
    # The production profile: introspection for dashboard sessions only, no "did you mean".
    production: bool = False


def _refusal(error: KeyplaneError) -> GraphQLError:
    return GraphQLError(error.message, original_error=error, extensions=error.extensions)


class KeyplaneSchema(strawberry.Schema):
    """Strawberry logs every GraphQL error with its traceback; ours are answers, not faults.

    Unexpected exceptions are logged (with traceback) by MaskInternalErrors, once, when it
    masks them; refusals with a code (UNAUTHENTICATED, NOT_FOUND, ...) and document errors
    are the client's business and are not logged.
    """

    def __init__(
        self,
        *args: Any,
        policy: QueryPolicy,
        root_value: Callable[[Any], object] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        # No schema extension and no directive: admitted operations run straight on
        # graphql-core (`_execute_directly`).
        self._plain = not self.get_extensions()
        self.policy = policy
        # Makes an operation's root value from its context when the caller gives none.
        self._root_value = root_value
        self.queries = QueryCache(self._schema, policy.limits)
        self._errors = MaskInternalErrors(hide_suggestions=policy.production)
        self._cost_maximum = policy.limits.max_cost
        # The admitted document, handed from `_run` to `_create_execution_context`: Strawberry
        # calls that hook first thing in `execute`, before its first await, so nothing else
        # runs in between. (A ContextVar would also reach every task started during the
        # operation, and a long-lived one would keep the document alive.)
        self._admitted: DocumentNode | None = None

    def parsed(self, query: str, context: Any) -> ParsedQuery:
        """The query as the view parsed it to price it: from the context (the last one, or one
        too long for the cache), else from the cache."""
        last: ParsedQuery | None = getattr(context, "last_parsed", None)
        if last is not None and context.last_query == query:
            return last
        kept: dict[str, ParsedQuery] | None = getattr(context, "long_queries", None)
        if kept is not None and query in kept:
            return kept[query]
        return self.queries.parsed(query)

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        if not query:  # Strawberry answers a missing query itself
            return await super().execute(
                query, variable_values, context_value, root_value, operation_name,
                allowed_operation_types, operation_extensions,
            )  # fmt: skip
        parsed = self.parsed(query, context_value)
        operation = parsed.operation(operation_name)
        extensions = None
        if isinstance(operation, Operation) and operation.cleared:
            # Admitted before, and nothing about it depends on this request's variables.
            requested = operation.shape.cost
            refusals = None
            extensions = operation.extensions
        elif parsed.error is not None:
            requested = 0
            refusals = [parsed.error]
        elif not isinstance(operation, Operation):
            # No such operation (Strawberry says so, HTTP 400) or several without a name
            # (the view refused those already).
            requested = 0
            refusals = list(self._validated(parsed)) or None
        else:
            requested = operation.cost(variable_values)
            refusals = self._admit(parsed, operation, requested, context_value)
            if refusals is None and operation.settled:
                operation.clear({"cost": {"requested": requested, "maximum": self._cost_maximum}})
        if refusals:
            result = ExecutionResult(data=None, errors=refusals)
        else:
            if root_value is None and self._root_value is not None:
                root_value = self._root_value(context_value)
            allowed = cast(
                "Collection[OperationType]",  # Strawberry's view passes a set
                allowed_operation_types or DEFAULT_ALLOWED_OPERATION_TYPES,
            )
            direct = (
                self._plain
                and isinstance(operation, Operation)
                and _RUN_DIRECTLY.get(operation.node.operation) in allowed
            )
            result = await self._run(
                direct, parsed.document, query, variable_values, context_value, root_value,
                operation_name, allowed_operation_types, operation_extensions,
            )  # fmt: skip
        if result.errors:
            self._errors.mask(result)
        if extensions is None:
            extensions = {"cost": {"requested": requested, "maximum": self._cost_maximum}}
        # Shared by every answer to a cleared operation: nothing changes it once made.
        result.extensions = {**result.extensions, **extensions} if result.extensions else extensions
        return result

    def _validated(self, parsed: ParsedQuery) -> tuple[GraphQLError, ...]:
        return parsed.validation_errors(self.policy.limits, hide_suggestions=self.policy.production)

    def _admit(
        self, parsed: ParsedQuery, operation: Operation, requested: int, context: Any
    ) -> list[GraphQLError] | None:
        """Why this operation may not run, or None: the cheap checks first."""
        limits = self.policy.limits
        shape = operation.shape
        if shape.aliases > limits.max_aliases:
            return [
                _refusal(
                    QueryTooComplex(
                        f"The operation uses {shape.aliases} aliases; at most "
                        f"{limits.max_aliases} are allowed."
                    )
                )
            ]
        if shape.depth > limits.max_depth:
            return [
                _refusal(
                    QueryTooComplex(
                        f"The operation exceeds maximum operation depth of {limits.max_depth} "
                        f"(it is {shape.depth} deep)."
                    )
                )
            ]
        if shape.repeated > MAX_REPEATED_SELECTIONS:
            return [
                _refusal(
                    QueryTooComplex(
                        f"A field is selected {shape.repeated} times in one selection set; at "
                        f"most {MAX_REPEATED_SELECTIONS} are allowed."
                    )
                )
            ]
        if requested > limits.max_cost:
            return [
                _refusal(
                    QueryTooComplex(
                        f"The operation costs {requested}, more than the maximum of "
                        f"{limits.max_cost}: ask for fewer or smaller pages or shorter series."
                    )
                )
            ]
        if shape.introspects and self.policy.production:
            principal = getattr(context, "principal", None)
            if getattr(principal, "kind", None) is not AuthKind.JWT:
                return [_refusal(Forbidden("Introspection is open to dashboard sessions only."))]
        return list(self._validated(parsed)) or None

    async def _run(
        self,
        direct: bool,
        document: DocumentNode | None,
        query: str,
        variable_values: dict[str, Any] | None,
        context_value: Any | None,
        root_value: Any | None,
        operation_name: str | None,
        allowed_operation_types: Iterable[OperationType] | None,
        operation_extensions: dict[str, Any] | None,
    ) -> ExecutionResult:
        deadlines: Deadlines | None = getattr(
            getattr(context_value, "services", None), "deadlines", None
        )
        task = None if deadlines is None else deadlines.enter()
        try:
            if direct:
                assert document is not None
                execution = self._execute_directly(
                    document, variable_values, context_value, root_value, operation_name,
                    operation_extensions,
                )  # fmt: skip
            else:
                self._admitted = document
                execution = super().execute(
                    query, variable_values, context_value, root_value, operation_name,
                    allowed_operation_types, operation_extensions,
                )  # fmt: skip
            if deadlines is not None:
                result = await execution
            else:
                async with asyncio.timeout(self.policy.timeout_seconds):
                    result = await execution
        except asyncio.CancelledError:
            if deadlines is None or not deadlines.leave(task):
                raise
            return self._timed_out()
        except TimeoutError:  # asyncio.timeout's, where no watcher keeps the deadlines
            return self._timed_out()
        finally:
            self._admitted = None
        if deadlines is not None:
            deadlines.leave(task)
        return result

    async def _execute_directly(
        self,
        document: DocumentNode,
        variable_values: dict[str, Any] | None,
        context_value: Any | None,
        root_value: Any | None,
        operation_name: str | None,
        operation_extensions: dict[str, Any] | None,
    ) -> ExecutionResult:
        """An admitted query or mutation, run by graphql-core as Strawberry's `execute` runs
        it, without what that adds around it for a schema that has no extension: an
        extension runner and its four hook contexts, a middleware manager, an execution
        context object (module docstring)."""
        try:
            result = execute(
                self._schema, document, root_value=root_value, context_value=context_value,
                variable_values=variable_values, operation_name=operation_name,
                executor_class=self.execution_context_class,
                is_awaitable=_IS_AWAITABLE, operation_extensions=operation_extensions,
            )  # fmt: skip
            if isawaitable(result):
                result = await result
        except Exception as exc:  # as Strawberry's `execute`: an error, not a failed request
            if not isinstance(exc, GraphQLError):
                exc = GraphQLError(str(exc), original_error=exc)
            return ExecutionResult(data=None, errors=[exc])
        return ExecutionResult(data=result.data, errors=result.errors)

    def _timed_out(self) -> ExecutionResult:
        limit = f"{self.policy.timeout_seconds:g}"
        return ExecutionResult(
            data=None,
            errors=[
                _refusal(
                    OperationTimeout(
                        f"The operation ran longer than {limit} s and was stopped: what had "
                        "not finished was cancelled and its changes rolled back."
                    )
                )
            ],
        )

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        return None

    def _create_execution_context(self, *args: Any, **kwargs: Any) -> ExecutionContext:
        execution_context = super()._create_execution_context(*args, **kwargs)
        document, self._admitted = self._admitted, None
        if document is not None:
            execution_context.graphql_document = document
            execution_context.pre_execution_errors = []  # validated in `execute`
        return execution_context
