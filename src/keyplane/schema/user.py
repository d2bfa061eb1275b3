"""GraphQL types for users and dashboard sessions."""

from __future__ import annotations

from datetime import datetime

import strawberry

from keyplane import models
from keyplane.records import UserRecord


@strawberry.type(description="A person who signs in to the dashboard.")
class User:
    id: strawberry.ID = strawberry.field(description="Opaque user id.")
    email: str = strawberry.field(description="Sign-in email, lower-cased.")
    name: str = strawberry.field(description="Display name.")
    created_at: datetime = strawberry.field(description="When the account was created.")

    @classmethod
    def from_model(cls, user: models.User | UserRecord) -> User:
        return cls(
            id=strawberry.ID(user.id), email=user.email, name=user.name, created_at=user.created_at
        )


@strawberry.type(description="A dashboard session token and whom it belongs to.")
class AuthPayload:
    access_token: str = strawberry.field(
        description="Send as `Authorization: Bearer <token>`; ends at expiresAt or on logOut."
    )
    expires_at: datetime = strawberry.field(description="When the token stops working.")
    user: User = strawberry.field(description="The signed-in user.")


@strawberry.input(description="Create a dashboard account.")
class SignUpInput:
    email: str = strawberry.field(description="Sign-in email; unique.")
    password: str = strawberry.field(description="8 to 256 characters.")
    name: str = strawberry.field(description="Display name, 1 to 64 characters.")


@strawberry.input(description="Sign in with email and password.")
class LogInInput:
    email: str = strawberry.field(description="Sign-in email.")
    password: str = strawberry.field(description="Password.")
