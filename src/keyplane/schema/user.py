"""GraphQL types for users and dashboard sessions."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from datetime import datetime
from typing import Any

import strawberry

from keyplane import models
from keyplane.errors import Forbidden
from keyplane.permissions.scopes import Scope
from keyplane.records import UserRecord
from keyplane.schema.node import Node
from keyplane.schema.permissions import may_refuse

EMAIL_RULE = (
    "A user's email is readable by that person (a dashboard session or an OAuth token), and "
    "by whoever holds MANAGE_PROJECT where the user was reached (the key's or the document's "
    "environment; for a member, what `members` needs); null with FORBIDDEN otherwise."
)


class _Refused:
    """An email the caller may not read: graphql-core awaits it, and a fresh FORBIDDEN (one
    per field, located at its path) nulls the field alone. Nothing is built when the field is
    not selected, and a readable email stays a plain value."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, str | None]:
        raise Forbidden(
            "Reading this email needs MANAGE_PROJECT where the user was reached.",
            required_scopes=[Scope.MANAGE_PROJECT],
        )
        yield  # a generator, so that each await raises anew


REFUSED = _Refused()


@strawberry.type(description="A person who signs in to the dashboard.")
class User(Node):
    id: strawberry.ID = strawberry.field(description="Opaque user id.")
    email: str | Awaitable[str | None] | None = strawberry.field(
        graphql_type=str | None,
        description="Sign-in email, lower-cased. " + EMAIL_RULE,
        metadata=may_refuse(EMAIL_RULE),
    )
    name: str = strawberry.field(description="Display name.")
    created_at: datetime = strawberry.field(description="When the account was created.")

    @classmethod
    def from_model(cls, user: models.User | UserRecord, *, email_visible: bool) -> User:
        """`email_visible`: the caller's right, decided by `Access` (`owns`, `reads_emails`)."""
        return cls(
            id=strawberry.ID(user.id),
            email=user.email if email_visible else REFUSED,
            name=user.name,
            created_at=user.created_at,
        )


@strawberry.type(description="A dashboard session token and whom it belongs to.")
class AuthPayload:
    access_token: str = strawberry.field(
        description="Send as `Authorization: Bearer <token>`; ends at expiresAt or on logOut."
    )
    expires_at: datetime = strawberry.field(description="When the token stops working.")
    user: User = strawberry.field(description="The signed-in user (their email included).")


@strawberry.input(description="Create a dashboard account.")
class SignUpInput:
    email: str = strawberry.field(description="Sign-in email; unique.")
    password: str = strawberry.field(description="8 to 256 characters.")
    name: str = strawberry.field(description="Display name, 1 to 64 characters.")


@strawberry.input(description="Sign in with email and password.")
class LogInInput:
    email: str = strawberry.field(description="Sign-in email.")
    password: str = strawberry.field(description="Password.")
