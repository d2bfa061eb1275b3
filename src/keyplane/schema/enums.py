"""The closed sets the API exposes, registered once as GraphQL enums."""

from __future__ import annotations

import strawberry

from keyplane.auth.principal import AuthKind
from keyplane.models.api_key import ApiKeyStatus
from keyplane.permissions.scopes import Role, Scope

strawberry.enum(Scope, description="What an API key, token or role may do.")
strawberry.enum(Role, description="A member's role in a project.")
strawberry.enum(ApiKeyStatus, description="Whether a key authenticates requests now.")
strawberry.enum(AuthKind, description="How the caller authenticated.")

__all__ = ["ApiKeyStatus", "AuthKind", "Role", "Scope"]
