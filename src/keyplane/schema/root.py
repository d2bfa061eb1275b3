"""Every operation, its resolver and its permission, in one place."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.extensions import QueryDepthLimiter, ValidationCache
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.config import StrawberryConfig

from keyplane import models
from keyplane.auth.principal import AuthKind
from keyplane.context import Info
from keyplane.permissions.fields import AllowAny, HasAnyScope, IsAuthenticated, IsUser
from keyplane.permissions.scopes import Scope
from keyplane.models.activity import ActivityKind
from keyplane.resolvers import account, activity, api_key, project
from keyplane.schema.activity import ActivityEventConnection
from keyplane.schema.account import AuthPayload, LogInInput, SignUpInput, User
from keyplane.schema.api_key import (
    ApiKey,
    CreateApiKeyInput,
    CreateApiKeyPayload,
    RotateApiKeyInput,
    RotateApiKeyPayload,
    UpdateApiKeyInput,
)
from keyplane.schema.errors import MaskInternalErrors
from keyplane.schema.parser_cache import ParserCache
from keyplane.schema.project import (
    CreateEnvironmentInput,
    CreateProjectInput,
    Environment,
    Project,
)
from keyplane.schema.viewer import Viewer

MANAGE = HasAnyScope(Scope.MANAGE_PROJECT)
READ_KEYS = HasAnyScope(Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS)


def guarded(*permissions: BasePermission) -> list[Any]:
    """The permission extension of a root field: every root field must declare one."""
    return [
        PermissionExtension(
            permissions=list(permissions), fail_silently=False, use_directives=False
        )
    ]


def _grant(result: account.SessionGrant) -> AuthPayload:
    return AuthPayload(
        access_token=result.access_token,
        expires_at=result.expires_at,
        user=User.from_model(result.user),
    )


@strawberry.type(description="Read operations.")
class Query:
    @strawberry.field(
        description="Who is calling: kind, user, key, environment and scopes.",
        extensions=guarded(AllowAny()),
    )
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        return Viewer(kind=principal.kind, scopes=sorted(principal.token_scopes))

    @strawberry.field(
        description="Projects the caller belongs to (for a key: its own).",
        extensions=guarded(IsAuthenticated()),
    )
    async def projects(self, info: Info) -> list[Project]:
        found = await project.list_projects(info.context.access)
        return [Project.from_model(p) for p in found]

    @strawberry.field(description="One project.", extensions=guarded(IsAuthenticated()))
    async def project(self, info: Info, id: strawberry.ID) -> Project | None:
        found = await project.get_project(info.context.access, project_id=str(id))
        return Project.from_model(found)

    @strawberry.field(
        description="One environment the caller can reach.", extensions=guarded(IsAuthenticated())
    )
    async def environment(self, info: Info, id: strawberry.ID) -> Environment | None:
        found = await project.get_environment(info.context.access, environment_id=str(id))
        return Environment.from_model(found)

    @strawberry.field(
        description="One API key. Needs MANAGE_PROJECT or VIEW_ANALYTICS in its environment "
        "(a key may always read itself).",
        extensions=guarded(IsAuthenticated()),
    )
    async def api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        found = await api_key.get_api_key(info.context.access, key_id=str(id))
        return ApiKey.from_model(found, now=info.context.now)


    @strawberry.field(
        description="An environment's activity log, newest first (with project-wide member "
        "events). Needs MANAGE_PROJECT or VIEW_ANALYTICS there.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS)),
    )
    async def activity(
        self,
        info: Info,
        environment_id: strawberry.ID,
        first: int = 20,
        after: str | None = None,
        kinds: list[ActivityKind] | None = None,
    ) -> ActivityEventConnection | None:
        page = await activity.list_activity(
            info.context.access,
            environment_id=str(environment_id),
            first=first,
            after=after,
            kinds=kinds,
        )
        return ActivityEventConnection.from_page(page)


@strawberry.type(description="Write operations.")
class Mutation:
    @strawberry.mutation(
        description="Create a dashboard account and sign in.", extensions=guarded(AllowAny())
    )
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthPayload | None:
        services = info.context.services
        return _grant(
            await account.sign_up(
                services.accounts,
                email=input.email,
                password=input.password,
                name=input.name,
                now=info.context.now,
            )
        )

    @strawberry.mutation(
        description="Sign in; returns a short-lived dashboard token.",
        extensions=guarded(AllowAny()),
    )
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload | None:
        services = info.context.services
        return _grant(
            await account.log_in(
                services.accounts, email=input.email, password=input.password, now=info.context.now
            )
        )

    @strawberry.mutation(
        description="End this dashboard session: its token is refused from the next request on.",
        # Only a dashboard JWT is a session; an OAuth token or a key is refused as FORBIDDEN.
        extensions=guarded(IsUser(AuthKind.JWT)),
    )
    async def log_out(self, info: Info) -> bool | None:
        return await account.log_out(info.context.principal, now=info.context.now)

    @strawberry.mutation(
        description="Create a project; the caller becomes its OWNER.",
        extensions=guarded(IsUser(), MANAGE),
    )
    async def create_project(self, info: Info, input: CreateProjectInput) -> Project | None:
        created = await project.create_project(info.context.access, name=input.name)
        return Project.from_model(created)

    @strawberry.mutation(
        description="Create an environment; needs MANAGE_PROJECT across the project.",
        extensions=guarded(IsUser(), MANAGE),
    )
    async def create_environment(
        self, info: Info, input: CreateEnvironmentInput
    ) -> Environment | None:
        created = await project.create_environment(
            info.context.access, project_id=str(input.project_id), name=input.name
        )
        return Environment.from_model(created)

    @strawberry.mutation(
        description="Issue an API key; its secret is in the payload, this once only.",
        extensions=guarded(MANAGE),
    )
    async def create_api_key(
        self, info: Info, input: CreateApiKeyInput
    ) -> CreateApiKeyPayload | None:
        issued = await api_key.create_api_key(
            info.context.access,
            environment_id=str(input.environment_id),
            name=input.name,
            scopes=input.scopes,
            expires_at=input.expires_at,
            now=info.context.now,
            rate_limit_per_minute=input.rate_limit_per_minute,
        )
        return CreateApiKeyPayload.from_issued(issued, now=info.context.now)

    @strawberry.mutation(
        description="Rename a key or change its scopes.", extensions=guarded(MANAGE)
    )
    async def update_api_key(self, info: Info, input: UpdateApiKeyInput) -> ApiKey | None:
        updated = await api_key.update_api_key(
            info.context.access,
            key_id=str(input.id),
            name=input.name,
            scopes=input.scopes,
            rate_limit_per_minute=input.rate_limit_per_minute,
            clear_rate_limit=input.clear_rate_limit,
            now=info.context.now,
        )
        return ApiKey.from_model(updated, now=info.context.now)

    @strawberry.mutation(
        description="Revoke a key now: its next request gets HTTP 401.", extensions=guarded(MANAGE)
    )
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        revoked = await api_key.revoke_api_key(
            info.context.access, key_id=str(id), now=info.context.now
        )
        return ApiKey.from_model(revoked, now=info.context.now)

    @strawberry.mutation(
        description="Delete a key for good; returns what it was.", extensions=guarded(MANAGE)
    )
    async def delete_api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        deleted = await api_key.delete_api_key(
            info.context.access, key_id=str(id), now=info.context.now
        )
        return ApiKey.from_model(deleted, now=info.context.now)

    @strawberry.mutation(
        description="Issue a replacement key and expire the old one after an overlap.",
        extensions=guarded(MANAGE),
    )
    async def rotate_api_key(
        self, info: Info, input: RotateApiKeyInput
    ) -> RotateApiKeyPayload | None:
        issued = await api_key.rotate_api_key(
            info.context.access,
            key_id=str(input.id),
            expire_old_in_seconds=input.expire_old_in_seconds,
            now=info.context.now,
        )
        return RotateApiKeyPayload.from_issued(issued, now=info.context.now)


def build_schema(*, max_batch: int = 25) -> strawberry.Schema:
    """One schema per app, so the batch size can follow the settings."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        config=StrawberryConfig(
            disable_field_suggestions=True, batching_config={"max_operations": max_batch}
        ),
        extensions=[
            MaskInternalErrors,
            lambda: QueryDepthLimiter(max_depth=10),
            ParserCache,
            ValidationCache,
        ],
    )


# The schema with default settings: exported as schema.graphql and used by tooling.
schema = build_schema()

__all__ = ["Mutation", "Query", "build_schema", "models", "schema"]
