"""The `viewer` type: who is calling, and with what."""

from __future__ import annotations

import strawberry

import keyplane.schema.enums  # noqa: F401  (registers enum descriptions first)
from keyplane.auth.principal import AuthKind
from keyplane.context import Info
from keyplane.models import ApiKey as ApiKeyModel
from keyplane.permissions.scopes import Scope
from keyplane.schema.account import User
from keyplane.schema.api_key import ApiKey
from keyplane.schema.project import Environment


@strawberry.type(description="The caller of this request.")
class Viewer:
    kind: AuthKind = strawberry.field(description="How the caller authenticated.")
    scopes: list[Scope] = strawberry.field(
        description="The credential's own scopes: a key's scopes, an OAuth token's scope claim, "
        "all four for a dashboard session (roles narrow these per project)."
    )

    @strawberry.field(description="The signed-in user, or the user who created the calling key.")
    async def user(self, info: Info) -> User | None:
        user_id = info.context.principal.user_id
        if user_id is None:
            return None
        user = await info.context.loaders.user.load(user_id)
        return None if user is None else User.from_model(user)

    @strawberry.field(description="The calling API key, if a key authenticated this request.")
    async def api_key(self, info: Info) -> ApiKey | None:
        grant = info.context.principal.key
        if grant is None:
            return None
        key = await ApiKeyModel.get_or_none(id=grant.key_id)
        return None if key is None else ApiKey.from_model(key, now=info.context.now)

    @strawberry.field(description="The calling key's environment.")
    async def environment(self, info: Info) -> Environment | None:
        grant = info.context.principal.key
        if grant is None:
            return None
        environment = await info.context.loaders.environment.load(grant.environment_id)
        return None if environment is None else Environment.from_model(environment)
