"""The closed set of errors keyplane reports, each with a stable code.

    KeyplaneError                 INTERNAL (never shown: masked)
     ├── Unauthenticated          UNAUTHENTICATED  no credentials where some are needed
     ├── InvalidCredentials       UNAUTHENTICATED  credentials presented but refused (HTTP 401)
     ├── Forbidden                FORBIDDEN        known caller, missing scope or role
     ├── NotFound                 NOT_FOUND        absent, or outside the caller's reach
     ├── BadUserInput             BAD_USER_INPUT   invalid argument; `field` names it
     ├── Conflict                 CONFLICT         uniqueness or state conflict
     ├── RateLimited              RATE_LIMITED     quota exhausted (HTTP 429)
     ├── QueryTooComplex          QUERY_TOO_COMPLEX  too many tokens, aliases, levels or cost
     ├── OperationTimeout         TIMEOUT          ran past the per-operation time limit
     ├── MethodNotAllowed         METHOD_NOT_ALLOWED  not a POST, in production (HTTP 405)
     ├── UnsupportedMediaType     UNSUPPORTED_MEDIA_TYPE  a POST body that is not JSON (HTTP 415)
     └── ServiceUnavailable       SERVICE_UNAVAILABLE  database locked or unreachable (HTTP 503)

Resolvers raise these; graphql-core copies `extensions` onto the GraphQL error, and
`schema.errors.MaskInternalErrors` hides every other exception behind INTERNAL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar


class KeyplaneError(Exception):
    code: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "Internal server error."

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)

    @property
    def extensions(self) -> dict[str, Any]:
        return {"code": self.code}


class Unauthenticated(KeyplaneError):
    code = "UNAUTHENTICATED"
    default_message = "Authentication required."


class InvalidCredentials(Unauthenticated):
    default_message = "Invalid or expired credentials."

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str = "invalid",
        refused_key: Any = None,
    ):
        # Why (for metrics) and, when an existing key was refused (revoked or expired), its
        # row (a records.KeyRecord) for usage metering and the activity log. Neither is
        # ever shown to the caller.
        self.reason = reason
        self.refused_key = refused_key
        super().__init__(message)


class Forbidden(KeyplaneError):
    """`required_scopes`: the scopes that would have allowed the call (none for an operation
    only people may call, or a refusal no scope lifts), shown as `extensions.requiredScopes`;
    `reason`, when given, a stable word for why (MISSING_SCOPE, PEOPLE_ONLY, SESSIONS_ONLY)."""

    code = "FORBIDDEN"
    default_message = "You are not allowed to do this."

    def __init__(
        self,
        message: str | None = None,
        *,
        required_scopes: Iterable[str] = (),
        reason: str | None = None,
    ) -> None:
        self.required_scopes = sorted(str(scope) for scope in required_scopes)
        self.reason = reason
        super().__init__(message)

    @property
    def extensions(self) -> dict[str, Any]:
        extensions: dict[str, Any] = {"code": self.code, "requiredScopes": self.required_scopes}
        if self.reason is not None:
            extensions["reason"] = self.reason
        return extensions


class NotFound(KeyplaneError):
    code = "NOT_FOUND"
    default_message = "Not found."


class BadUserInput(KeyplaneError):
    code = "BAD_USER_INPUT"
    default_message = "Invalid input."

    def __init__(self, message: str, *, field: str) -> None:
        self.field = field
        super().__init__(message)

    @property
    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, "field": self.field}


class Conflict(KeyplaneError):
    code = "CONFLICT"
    default_message = "This conflicts with an existing object."

    def __init__(self, message: str | None = None, **details: str) -> None:
        # Ids that name what is in the way (e.g. `replacedBy`), shown in `extensions`.
        self.details = details
        super().__init__(message)

    @property
    def extensions(self) -> dict[str, Any]:
        return {"code": self.code, **self.details}


class RateLimited(KeyplaneError):
    code = "RATE_LIMITED"
    default_message = "Rate limit exceeded."


class QueryTooComplex(KeyplaneError):
    code = "QUERY_TOO_COMPLEX"
    default_message = "This operation asks for too much at once."


class OperationTimeout(KeyplaneError):
    code = "TIMEOUT"
    default_message = "The operation took too long and was stopped."


class MethodNotAllowed(KeyplaneError):
    code = "METHOD_NOT_ALLOWED"
    default_message = "GraphQL requests must be sent with POST."


class UnsupportedMediaType(KeyplaneError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    default_message = "GraphQL requests must have the Content-Type application/json."


class ServiceUnavailable(KeyplaneError):
    code = "SERVICE_UNAVAILABLE"
    default_message = "The service is temporarily unavailable; retry shortly."
