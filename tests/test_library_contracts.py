"""The library internals keyplane relies on (schema/engine.py lists them) still have the shape we
rely on: an upgrade that changes one fails here, by name, not somewhere in a request.

uvicorn's protocol internals (connections.py) are held by tests/test_security_connections.py,
which starts real servers with them."""

from __future__ import annotations

import collections.abc
import inspect
from collections.abc import AsyncIterator
from typing import Any

import pytest
from graphql import (
    Executor as GraphQLExecutor,
)
from graphql import (
    GraphQLError,
    GraphQLResolveInfoHelpers,
    GraphQLSchema,
    GraphQLSyntaxError,
    MiddlewareManager,
    execute,
    parse,
    specified_rules,
    validate,
)
from graphql import build_schema as build_sdl
from graphql import graphql as run_graphql
from graphql.execution.collect_fields import CollectedFields, FieldDetails
from limits import parse as parse_limit
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.limits import safe_string
from strawberry.extensions import MaskErrors
from strawberry.http import async_base_view
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema._graphql_core import execution_context_class_kwargs
from strawberry.schema.schema import Schema, StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types import ExecutionResult, SubscriptionExecutionResult

from keyplane.ratelimit.tiers import stable
from keyplane.schema.engine import fast_http_view
from keyplane.schema.errors import MaskInternalErrors
from keyplane.schema.executor import Executor
from keyplane.schema.root import build_schema

SDL = build_sdl("enum Color { RED GREEN }  type Query { kind(color: Color): String }")


def test_strawberry_makes_its_execution_context_in_the_hook_the_engine_overrides() -> None:
    parameters = list(inspect.signature(Schema._create_execution_context).parameters)
    assert parameters[:3] == ["self", "query", "allowed_operation_types"]
    assert "self._create_execution_context(" in inspect.getsource(Schema.execute)
    # Strawberry parses and validates only what is not already on the context.
    source = inspect.getsource(inspect.getmodule(Schema))  # type: ignore[arg-type]
    assert "if execution_context.graphql_document is not None:\n        return" in source
    assert "and execution_context.pre_execution_errors is None" in source


async def test_strawberry_runs_graphql_core_as_the_engine_runs_it_directly() -> None:
    # schema/engine.py `_execute_directly` passes graphql-core what Strawberry's `execute`
    # passes, and skips it only while the schema has no extension (nothing else is added).
    source = inspect.getsource(Schema._execute_operation)
    assert "**execution_context_class_kwargs(self.execution_context_class)" in source
    assert "is_awaitable=optimized_is_awaitable" in source
    assert 'return {"executor_class": execution_context_class}' in inspect.getsource(
        execution_context_class_kwargs
    )
    assert Schema._get_custom_context_kwargs(build_schema(), {"a": 1}) == {
        "operation_extensions": {"a": 1}
    }
    schema = build_schema()
    assert schema.get_extensions() == []
    assert schema.execution_context_class is Executor
    ours, strawberrys = (
        await schema.execute("{ __typename }"),
        await Schema.execute(schema, "{ __typename }"),
    )
    assert (
        (ours.data, ours.errors)
        == (strawberrys.data, strawberrys.errors)
        == (
            {"__typename": "Query"},
            None,
        )
    )


def test_strawberrys_schema_keeps_graphql_cores_schema_where_the_query_cache_reads_it() -> None:
    assert isinstance(build_schema()._schema, GraphQLSchema)


def test_strawberrys_view_runs_an_operation_through_the_method_the_view_overrides() -> None:
    parameters = list(inspect.signature(AsyncBaseHTTPView.execute_operation).parameters)
    assert parameters == [
        "self",
        "request",
        "request_adapter",
        "request_data",
        "context",
        "root_value",
        "sub_response",
    ]
    assert "await self.execute_operation(" in inspect.getsource(AsyncBaseHTTPView.run)


def test_mask_errors_masks_what_its_predicate_names_and_leaves_every_error_as_it_was() -> None:
    # given
    kept, hidden = GraphQLError("kept"), GraphQLError("hidden", extensions={"a": 1})
    masking = MaskErrors(should_mask_error=lambda error: error is hidden, error_message="Masked.")

    # when
    processed = masking._process_errors([kept, hidden])

    # then
    assert processed[0] is kept
    assert processed[1] is not hidden
    assert [error.formatted for error in processed] == [
        {"message": "kept"},
        {"message": "Masked."},
    ]
    assert hidden.formatted == {"message": "hidden", "extensions": {"a": 1}}


def test_mask_errors_hands_a_result_to_process_result_after_the_operation() -> None:
    assert list(inspect.signature(MaskErrors._process_result).parameters) == ["self", "result"]
    assert "self._process_result(result)" in inspect.getsource(MaskErrors.on_operation)
    assert "error" in inspect.signature(MaskInternalErrors.anonymise_error).parameters


def test_graphql_core_stops_lexing_with_the_message_the_query_cache_recognises() -> None:
    with pytest.raises(GraphQLSyntaxError) as raised:
        parse("{ a b c d }", max_lexical_tokens=3)
    assert raised.value.message == (
        "Syntax Error: Document contains more than 3 tokens. Parsing aborted."
    )


def test_graphql_core_words_suggestions_as_the_masking_strips_them() -> None:
    errors = validate(SDL, parse("{ kinds }"), specified_rules)
    assert [error.message for error in errors] == [
        "Cannot query field 'kinds' on type 'Query'. Did you mean 'kind'?"
    ]


async def test_graphql_core_names_a_refused_variable_as_the_masking_reads_it() -> None:
    result = await run_graphql(
        SDL, "query($c: Color) { kind(color: $c) }", variable_values={"c": "BLUE"}
    )
    assert [error.message for error in result.errors or []] == [
        "Variable '$c' has invalid value: Value 'BLUE' does not exist in 'Color' enum."
    ]


class _Raises:
    def __await__(self) -> collections.abc.Generator[None, None, str]:
        raise ValueError("refused")
        yield


async def test_graphql_core_answers_an_exception_as_a_value_with_that_fields_error() -> None:
    # node.py hands `nodes` a refused id as its error; user.py an email as an awaitable raising
    schema = build_sdl("type Query { items: [String]! email: String name: String }")
    root = {"items": ["a", ValueError("refused"), "c"], "email": _Raises(), "name": "Ada"}

    result = await run_graphql(schema, "{ items email name }", root_value=root)

    assert result.data == {"items": ["a", None, "c"], "email": None, "name": "Ada"}
    assert [(error.message, error.path) for error in result.errors or []] == [
        ("refused", ["items", 1]),
        ("refused", ["email"]),
    ]


def test_graphql_core_collects_sub_fields_in_the_method_the_executor_overrides() -> None:
    parameters = list(
        inspect.signature(StrawberryGraphQLCoreExecutionContext.collect_subfields).parameters
    )
    assert parameters == ["self", "return_type", "field_details_list"]
    assert "collect_subfields(" in inspect.getsource(
        StrawberryGraphQLCoreExecutionContext.collect_subfields
    )
    fields = set(inspect.signature(FieldDetails).parameters)
    assert {"node", "defer_usage", "fragment_variable_values"} <= fields
    assert {"grouped_field_set", "new_defer_usages"} <= set(CollectedFields._fields)


async def test_graphql_core_binds_the_resolvers_helpers_as_the_executor_rebinds_them() -> None:
    """schema/executor.py replaces `async_helpers` (two methods bound to the executor, a
    reference cycle) with the same two methods reached through a weak reference."""
    sdl = build_sdl("type Query { hello: String }")
    made: list[GraphQLExecutor[Any]] = []

    class Watching(GraphQLExecutor[Any]):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    execute(sdl, parse("{ hello }"), executor_class=Watching)
    (executor,) = made
    helpers = executor.async_helpers
    assert isinstance(helpers, GraphQLResolveInfoHelpers)
    assert helpers._fields == ("gather", "track")
    assert helpers.gather == executor.gather_async_work
    assert helpers.track == executor.track_async_work
    assert list(inspect.signature(GraphQLExecutor.track_async_work).parameters) == [
        "self",
        "values",
    ]
    assert list(inspect.signature(GraphQLExecutor.gather_async_work).parameters) == [
        "self",
        "values",
    ]


def test_graphql_core_runs_each_field_through_the_method_leaf_fields_overrides() -> None:
    parameters = list(
        inspect.signature(StrawberryGraphQLCoreExecutionContext.execute_field).parameters
    )
    assert parameters == [
        "self",
        "parent_type",
        "source",
        "field_details_list",
        "path",
        "position_context",
    ]
    assert "self.execute_field(" in inspect.getsource(
        StrawberryGraphQLCoreExecutionContext.execute_fields
    )
    # What it calls for an object field, as complete_object_value and execute_field do.
    execution = StrawberryGraphQLCoreExecutionContext
    assert list(inspect.signature(execution.collect_and_execute_subfields).parameters) == [
        "self",
        "return_type",
        "field_details_list",
        "path",
        "result",
        "position_context",
    ]
    assert "self.collect_and_execute_subfields(" in inspect.getsource(
        execution.complete_object_value
    )
    assert list(inspect.signature(execution.handle_field_error).parameters) == [
        "self",
        "raw_error",
        "return_type",
        "field_details_list",
        "path",
    ]
    # Strawberry's resolver of a plain field is marked, reads the attribute with the
    # configured default resolver, and an execution's middleware sits on its manager.
    field = build_schema()._schema.get_type("ApiKey").fields["name"]  # type: ignore[union-attr]
    assert field.resolve._is_default is True
    definition = field.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
    assert definition.default_resolver is getattr
    assert definition.python_name == "name"
    assert MiddlewareManager().middlewares == ()


def test_strawberrys_view_reads_the_two_names_fast_http_view_replaces() -> None:
    assert "parse_content_type(request.content_type" in inspect.getsource(
        AsyncBaseHTTPView.parse_http_body
    )
    assert "isinstance(result, SubscriptionExecutionResult)" in inspect.getsource(
        AsyncBaseHTTPView.run
    )
    assert hasattr(async_base_view, "parse_content_type")
    assert hasattr(async_base_view, "SubscriptionExecutionResult")


def test_a_subscription_result_is_what_an_async_iterator_is() -> None:
    # The Protocol asks for exactly the two methods collections.abc.AsyncIterator checks.
    members = getattr(SubscriptionExecutionResult, "__protocol_attrs__", None)
    assert members == {"__aiter__", "__anext__"}

    async def stream() -> AsyncIterator[int]:
        yield 1

    for value in (stream(), ExecutionResult(data=None, errors=None), [], object()):
        expected = isinstance(value, SubscriptionExecutionResult)
        assert isinstance(value, collections.abc.AsyncIterator) is expected


@pytest.mark.parametrize(
    "header",
    [
        "application/json",
        "application/json; charset=utf-8",
        "text/plain",
        "",
        "multipart/form-data; boundary=x",
    ],
)
def test_the_cached_content_type_split_answers_as_strawberrys_own(header: str) -> None:
    # given
    fast_http_view()

    # when
    cached = async_base_view.parse_content_type(header)

    # then
    assert cached == parse_content_type(header)
    assert async_base_view.SubscriptionExecutionResult is collections.abc.AsyncIterator


# --- limits (ratelimit/memory.py, ratelimit/tiers.py) -------------------------------------------


def test_limits_memory_storage_schedules_clean_up_through_the_hook_the_paced_storage_replaces() -> (
    None
):
    hook = "_MemoryStorage__schedule_expiry"
    assert inspect.iscoroutinefunction(getattr(MemoryStorage, hook))
    for name in ("acquire_entry", "incr"):
        assert "await self.__schedule_expiry()" in inspect.getsource(getattr(MemoryStorage, name))


async def test_limits_memory_storage_keeps_its_state_where_the_paced_clean_up_reads_it() -> None:
    # given
    storage = MemoryStorage()

    # when
    assert await storage.acquire_entry("moving", 10, 60)
    assert await storage.incr("counter", 60) == 1

    # then
    [entry] = storage.events["moving"]
    assert entry.expiry == entry.atime + 60
    assert storage.storage["counter"] == 1
    assert set(storage.expirations) == {"counter"}
    assert {"moving", "counter"} <= set(storage.locks)
    assert storage.timer is not None
    storage.timer.cancel()


def test_limits_redis_storage_talks_through_a_redispy_bridge_whose_connection_runs_our_script() -> (
    None
):
    # given: no connection is made until a command is sent
    storage = RedisStorage("async+redis://127.0.0.1:6379/0", implementation="redispy")

    # then: the connection and key prefix ratelimit/redis_window.py uses
    assert isinstance(storage.bridge, RedispyBridge)
    assert storage.bridge.prefixed_key("k") == "LIMITS:k"
    assert callable(storage.bridge.get_connection().register_script)


def test_limits_redis_moving_window_is_a_list_newest_first_trimmed_to_the_limit() -> None:
    """ratelimit/redis_window.py writes and reads limits' lists exactly as limits' scripts do."""
    acquire = RedispyBridge.SCRIPT_ACQUIRE_MOVING_WINDOW.decode()
    assert "redis.call('lindex', KEYS[1], limit - amount)" in acquire
    assert "redis.call('lpush', KEYS[1]" in acquire
    assert "redis.call('ltrim', KEYS[1], 0, limit - 1)" in acquire
    assert "redis.call('expire', KEYS[1], expiry)" in acquire
    assert "if val and val >= target then" in RedispyBridge.SCRIPT_MOVING_WINDOW.decode()


@pytest.mark.parametrize(
    "name", ["acquire_entry", "get_moving_window", "incr", "get", "get_expiry", "clear"]
)
def test_limits_wraps_the_storage_methods_the_paced_storage_unwraps(name: str) -> None:
    method = getattr(MemoryStorage, name)
    unwrapped = inspect.unwrap(method)
    assert unwrapped is not method
    assert unwrapped.__qualname__ == f"MemoryStorage.{name}"


def test_a_stable_bucket_key_is_limits_own_key_without_the_amount() -> None:
    item = parse_limit("100/minute")
    assert safe_string(b"key") == "key"
    assert item.key_for("api_key", "key_1") == "LIMITER/api_key/key_1/100/1/minute"
    assert stable(item).key_for("api_key", "key_1") == "LIMITER/api_key/key_1/1/minute"


async def test_a_redispy_connection_once_connected_reads_and_writes_through_asyncio_streams() -> (
    None
):
    """ratelimit/redis_window.py `Pipelined` has redis-py connect a connection (handshake,
    AUTH, SELECT), then reads and writes its `_reader` and `_writer` itself."""
    import asyncio

    import hiredis
    from redis.asyncio import ConnectionPool

    async def answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands = hiredis.Reader()  # a command is a RESP array, as a reply is
        while data := await reader.read(65536):
            commands.feed(data)
            while commands.gets() is not False:
                writer.write(b"+OK\r\n")
        writer.close()

    server = await asyncio.start_server(answer_ok, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = ConnectionPool.from_url(f"redis://127.0.0.1:{port}/3")
    connection = pool.make_connection()  # type: ignore[no-untyped-call]

    await connection.connect()

    assert isinstance(connection._reader, asyncio.StreamReader)
    assert isinstance(connection._writer, asyncio.StreamWriter)
    connection._writer.write(b"*1\r\n$4\r\nPING\r\n")
    assert await connection._reader.read(65536) == b"+OK\r\n"
    await connection.disconnect()
    assert connection._reader is None
    await pool.aclose()
    server.close()
