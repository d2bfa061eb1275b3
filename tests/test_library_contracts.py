"""The library internals keyplane relies on (schema/engine.py lists them) still have the shape we
rely on: an upgrade that changes one fails here, by name, not somewhere in a request."""

from __future__ import annotations

import collections.abc
import inspect
from collections.abc import AsyncIterator

import pytest
from strawberry.extensions import MaskErrors
from strawberry.http import async_base_view
from strawberry.http.async_base_view import AsyncBaseHTTPView
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.schema import Schema, StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionResult, SubscriptionExecutionResult

from keyplane.schema.engine import fast_http_view


def test_strawberry_makes_its_execution_context_in_the_hook_the_engine_overrides() -> None:
    parameters = list(inspect.signature(Schema._create_execution_context).parameters)
    assert parameters[:3] == ["self", "query", "allowed_operation_types"]
    assert "self._create_execution_context(" in inspect.getsource(Schema.execute)
    # Strawberry parses and validates only what is not already on the context.
    assert "execution_context.graphql_document is not None" in inspect.getsource(
        inspect.getmodule(Schema)  # type: ignore[arg-type]
    )


def test_mask_errors_processes_results_through_the_methods_the_masking_overrides() -> None:
    assert callable(MaskErrors._process_errors)
    assert callable(MaskErrors._process_result)
    assert callable(MaskErrors.anonymise_error)


def test_graphql_core_collects_sub_fields_in_the_method_the_executor_overrides() -> None:
    parameters = list(
        inspect.signature(StrawberryGraphQLCoreExecutionContext.collect_subfields).parameters
    )
    assert parameters == ["self", "return_type", "field_details_list"]


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
