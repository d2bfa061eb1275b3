"""GraphQL types for projects and environments."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

import keyplane.schema.enums  # noqa: F401  (registers enum descriptions first)
from keyplane import models
from keyplane.context import Info
from keyplane.errors import NotFound
from keyplane.models.api_key import ApiKeyStatus
from keyplane.permissions.checks.environment_policy import Policy
from keyplane.records import EnvironmentRecord
from keyplane.resolvers import api_key as api_key_resolvers
from keyplane.resolvers import policy as policy_resolvers
from keyplane.resolvers import project as project_resolvers
from keyplane.resolvers import usage as usage_resolvers
from keyplane.resolvers.usage import Granularity
from keyplane.schema.idempotency import idempotency_key_field
from keyplane.schema.node import Node
from keyplane.schema.permissions import may_refuse, ruled
from keyplane.schema.usage import UsagePoint

if TYPE_CHECKING:
    from keyplane.schema.api_key import ApiKey, ApiKeyConnection


@strawberry.type(description="A project: a set of environments and the members who use them.")
class Project(Node):
    id: strawberry.ID = strawberry.field(description="Opaque project id.")
    name: str = strawberry.field(description="1 to 64 characters; unique per creator.")
    created_at: datetime = strawberry.field(description="When the project was created.")

    @classmethod
    def from_model(cls, project: models.Project) -> Project:
        return cls(id=strawberry.ID(project.id), name=project.name, created_at=project.created_at)

    @strawberry.field(description="The environments of this project that the caller can reach.")
    async def environments(self, info: Info) -> list[Environment]:
        found = await project_resolvers.project_environments(info.context.access, self.id)
        return [Environment.from_model(env) for env in found]


@strawberry.type(description="An environment (development, staging, a client...): keys live here.")
class Environment(Node):
    id: strawberry.ID = strawberry.field(description="Opaque environment id.")
    name: str = strawberry.field(description="1 to 64 characters; unique within its project.")
    created_at: datetime = strawberry.field(description="When the environment was created.")
    project_id: strawberry.Private[str]

    @classmethod
    def from_model(cls, environment: models.Environment | EnvironmentRecord) -> Environment:
        return cls(
            id=strawberry.ID(environment.id),
            name=environment.name,
            created_at=environment.created_at,
            project_id=environment.project_id,  # type: ignore[union-attr]
        )

    @strawberry.field(
        description="The project this environment belongs to.",
        metadata=may_refuse("NOT_FOUND when the project is gone"),
    )
    async def project(self, info: Info) -> Project | None:
        project = await models.Project.get_or_none(id=self.project_id)
        if project is None:
            raise NotFound()
        return Project.from_model(project)

    @strawberry.field(**ruled("Environment.apiKeys", "This environment's API keys, newest first."))
    async def api_keys(
        self,
        info: Info,
        first: Annotated[int, strawberry.argument(description="Page size, 1 to 100.")] = 20,
        after: Annotated[
            str | None, strawberry.argument(description="endCursor of the previous page.")
        ] = None,
        status: Annotated[
            ApiKeyStatus | None, strawberry.argument(description="Only keys in this status.")
        ] = None,
    ) -> Annotated[ApiKeyConnection, strawberry.lazy("keyplane.schema.api_key")] | None:
        from keyplane.schema.api_key import ApiKeyConnection

        page = await api_key_resolvers.list_api_keys(
            info.context.access,
            environment_id=self.id,
            project_id=self.project_id,
            first=first,
            after=after,
            status=status,
            now=info.context.now,
            counters=info.context.services.counters,
        )
        creator_ids = sorted({key.created_by_id for key, _ in page.items})
        creators = await info.context.loaders.user.load_many(creator_ids)
        connection = ApiKeyConnection.from_page(
            page,
            context=info.context,
            home=EnvironmentRecord(
                id=self.id, project_id=self.project_id, name=self.name, created_at=self.created_at
            ),
            creators={user.id: user for user in creators if user is not None},
            emails=await info.context.access.reads_emails(self.id),
        )
        return connection

    @strawberry.field(description="The key policy of this environment (none: no rule).")
    async def policy(self, info: Info) -> EnvironmentPolicy:
        found = await policy_resolvers.environment_policy(
            info.context.access, environment_id=self.id
        )
        return EnvironmentPolicy.from_policy(found)

    @strawberry.field(
        **ruled(
            "Environment.keysOutsidePolicy",
            "Live keys of this environment that break its policy (issued before it), newest first.",
        )
    )
    async def keys_outside_policy(
        self, info: Info
    ) -> list[Annotated[ApiKey, strawberry.lazy("keyplane.schema.api_key")]] | None:
        from keyplane.schema.api_key import ApiKey

        found = await policy_resolvers.keys_outside_policy(
            info.context.access,
            environment_id=self.id,
            project_id=self.project_id,
            now=info.context.now,
        )
        return list(
            await asyncio.gather(*(ApiKey.load(key, context=info.context) for key in found))
        )

    @strawberry.field(
        **ruled(
            "Environment.usage", "Requests and refusals of all this environment's keys over time."
        )
    )
    async def usage(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from", description="Start.")],
        to: Annotated[datetime, strawberry.argument(description="End (inclusive).")],
        granularity: Annotated[
            Granularity, strawberry.argument(description="Period of each point.")
        ] = Granularity.HOUR,
    ) -> list[UsagePoint] | None:
        points = await usage_resolvers.environment_usage(
            info.context.access,
            info.context.services.usage,
            environment_id=self.id,
            start=from_,
            end=to,
            granularity=granularity,
        )
        return [UsagePoint.from_point(p) for p in points]


@strawberry.type(description="What every key issued in an environment must respect.")
class EnvironmentPolicy:
    require_expiry: bool = strawberry.field(description="Keys must have an expiry.")
    max_lifetime_days: int | None = strawberry.field(
        description="Keys may live at most this many days from issue (or rotation); null: no limit."
    )
    allowed_scopes: list[str] = strawberry.field(
        description="The only scopes (built-in or extra) keys may carry; empty: any."
    )

    @classmethod
    def from_policy(cls, policy: Policy) -> EnvironmentPolicy:
        return cls(
            require_expiry=policy.require_expiry,
            max_lifetime_days=policy.max_lifetime_days,
            allowed_scopes=sorted(policy.allowed_scopes),
        )


@strawberry.input(description="Set an environment's key policy (it replaces the previous one).")
class UpdateEnvironmentPolicyInput:
    environment_id: strawberry.ID = strawberry.field(description="The environment.")
    require_expiry: bool = strawberry.field(default=False, description="Keys must have an expiry.")
    max_lifetime_days: int | None = strawberry.field(
        default=None, description="1 to 3650 days; null: no limit."
    )
    allowed_scopes: list[str] | None = strawberry.field(
        default=None,
        description="Scope names from Query.scopeCatalog; null or empty: any scope.",
    )


@strawberry.input(description="Create a project; you become its OWNER.")
class CreateProjectInput:
    name: str = strawberry.field(description="1 to 64 characters; unique among your projects.")
    idempotency_key: str | None = idempotency_key_field()


@strawberry.input(description="Create an environment in a project.")
class CreateEnvironmentInput:
    project_id: strawberry.ID = strawberry.field(description="The project.")
    name: str = strawberry.field(description="1 to 64 characters; unique within the project.")
    idempotency_key: str | None = idempotency_key_field()
