"""Maps every error to one code of our closed set and masks what we did not raise on purpose."""

from __future__ import annotations

import logging
import re

from graphql import GraphQLError
from strawberry.extensions import MaskErrors
from tortoise.exceptions import ValidationError as TortoiseValidationError

from keyplane.db import database_fault
from keyplane.errors import BadUserInput, KeyplaneError, NotFound, ServiceUnavailable
from keyplane.request_id import current_request_id

logger = logging.getLogger("keyplane.errors")
_VARIABLE_RE = re.compile(r"^Variable '\$(\w+)'")
# graphql-core appends " Did you mean ...?" to messages about unknown fields, arguments, types
# and enum values (validation and variable coercion alike).
_SUGGESTION_RE = re.compile(r"\s*Did you mean .*$", re.DOTALL)


def _is_internal(error: GraphQLError) -> bool:
    original = error.original_error
    if original is None or _known_fault(original) is not None:
        return False
    if error.path is None and isinstance(original, GraphQLError):
        # graphql-core refusing a variable's value before execution: the client's mistake.
        return False
    return not isinstance(original, KeyplaneError) or original.code == KeyplaneError.code


def _client_fault(original: BaseException) -> KeyplaneError | None:
    """Exceptions from below our resolvers that can only come from what the client sent.

    Tortoise refuses to even query an id longer than its column (ids are opaque, so such an id
    names nothing: NOT_FOUND, as for any missing object); datetime arithmetic overflows near
    year 9999 (an instant too far out to work with); Python refuses to read an integer of over
    4,300 digits.
    """
    if isinstance(original, TortoiseValidationError):
        return NotFound()
    if isinstance(original, OverflowError):
        return BadUserInput("That instant is too far in the future.", field="query")
    if isinstance(original, ValueError) and "integer string conversion" in str(original):
        # graphql-core reading an Int literal of over 4,300 digits (sys.int_info).
        return BadUserInput("A number in the document is too large for its type.", field="query")
    return None


def _database_fault(original: BaseException) -> KeyplaneError | None:
    """A locked or unreachable database met while resolving: SERVICE_UNAVAILABLE (the view
    answers 503), never INTERNAL. keyplane.db.database_fault knows the drivers' errors."""
    return ServiceUnavailable() if database_fault(original) else None


def _known_fault(original: BaseException) -> KeyplaneError | None:
    return _client_fault(original) or _database_fault(original)


class MaskInternalErrors(MaskErrors):
    """Unexpected exceptions become INTERNAL with a fixed message (logged with traceback);
    document and variable errors from graphql-core become BAD_USER_INPUT; with
    `hide_suggestions` (the production profile) no message says "Did you mean".

    Errors are never changed in place (but for dropping an answered refusal's traceback):
    validation errors are kept with their document and shared by every request sending it,
    so a changed error is a new one."""

    def __init__(self, *, hide_suggestions: bool = False) -> None:
        super().__init__(should_mask_error=_is_internal, error_message="Internal server error.")
        self.hide_suggestions = hide_suggestions

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        # The same id is in the response's X-Request-Id header: a caller can quote it.
        request_id = current_request_id.get()
        logger.error(
            "unexpected error at %s (request %s)", error.path, request_id, exc_info=original
        )
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        if request_id is not None:  # None only when the schema runs outside HTTP
            masked.extensions["requestId"] = request_id
        return masked

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        for error in errors:
            if error.original_error is not None and not _is_internal(error):
                # Answered by its code and message, never logged: its traceback holds the
                # resolvers' frames, which hold the executor, which holds this error, a
                # reference cycle per refused field until the garbage collector found it.
                # (Only the traceback is dropped; unexpected errors keep theirs for the log.)
                error.original_error.__traceback__ = None
                error.__traceback__ = None
        processed = [_translated(error) for error in super()._process_errors(errors)]
        return [self._coded(error) for error in processed]

    def _coded(self, error: GraphQLError) -> GraphQLError:
        message = error.message
        if self.hide_suggestions and "Did you mean" in message:
            message = _SUGGESTION_RE.sub("", message)
        extensions = error.extensions
        if not extensions or "code" not in extensions:
            match = _VARIABLE_RE.match(message)
            extensions = {"code": "BAD_USER_INPUT", "field": match.group(1) if match else "query"}
        if message is error.message and extensions is error.extensions:
            return error
        return GraphQLError(
            message=message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=error.original_error,
            extensions=extensions,
        )

    def mask(self, result: object) -> None:
        """Mask and code a finished result's errors in place."""
        self._process_result(result)

    def _process_result(self, result: object) -> None:
        # The base class tests `isinstance(result, <runtime_checkable Protocol>)`, which costs
        # ~10 µs a request (measured with cProfile); a plain attribute read does the same job.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = self._process_errors(errors)  # type: ignore[attr-defined]


def _translated(error: GraphQLError) -> GraphQLError:
    fault = None if error.original_error is None else _known_fault(error.original_error)
    if fault is None:
        return error
    return GraphQLError(
        message=fault.message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=fault,
    )
