"""Projects and their environments."""

from __future__ import annotations

from datetime import datetime

from tortoise.exceptions import IntegrityError

from keyplane.access import Access
from keyplane.errors import Conflict, Forbidden
from keyplane.models import Environment, Member, Project
from keyplane.permissions.rules import rule
from keyplane.permissions.scopes import Role
from keyplane.records import EnvironmentRecord
from keyplane.resolvers import idempotency, validate


async def create_project(
    access: Access, *, name: str, now: datetime, idempotency_key: str | None = None
) -> Project:
    principal = access.require_token(rule("Mutation.createProject"))
    if principal.user_id is None:
        raise Forbidden("Only a signed-in user can create projects.")
    retry = idempotency.retry_of(access, "createProject", idempotency_key, name=name)
    if (made := await idempotency.earlier(retry, now=now)) is not None:
        return await _replayed_project(made)
    name = validate.name(name)
    user_id = principal.user_id

    async def create() -> Project:
        project = await Project.create(name=name, created_by_id=user_id)
        await Member.create(
            project=project, user_id=user_id, role=Role.OWNER, all_environments=True
        )
        return project

    try:
        return await idempotency.once(
            retry, now=now, work=create, made=_id_of, replay=_replayed_project
        )
    except IntegrityError as exc:
        raise Conflict("You already have a project with this name.") from exc


def _id_of(made: Project | Environment) -> str:
    return made.id


async def _replayed_project(project_id: str) -> Project:
    project = await Project.get_or_none(id=project_id)
    if project is None:
        raise idempotency.gone()
    return project


async def _replayed_environment(environment_id: str) -> Environment:
    environment = await Environment.get_or_none(id=environment_id)
    if environment is None:
        raise idempotency.gone()
    return environment


async def list_projects(access: Access) -> list[Project]:
    principal = access.require_authenticated()
    if principal.key is not None:
        return await Project.filter(id=principal.key.project_id)
    return await Project.filter(members__user_id=principal.user_id).order_by("created_at", "id")


async def get_project(access: Access, *, project_id: str) -> Project:
    project, _ = await access.require_project(rule("Query.project"), project_id)
    return project


async def project_environments(access: Access, project_id: str) -> list[Environment]:
    return await access.visible_environments(project_id)


async def create_environment(
    access: Access,
    *,
    project_id: str,
    name: str,
    now: datetime,
    idempotency_key: str | None = None,
) -> Environment:
    project, _ = await access.require_project(rule("Mutation.createEnvironment"), project_id)
    retry = idempotency.retry_of(
        access, "createEnvironment", idempotency_key, project_id=project_id, name=name
    )
    if (made := await idempotency.earlier(retry, now=now)) is not None:
        return await _replayed_environment(made)
    name = validate.name(name)

    async def create() -> Environment:
        return await Environment.create(project=project, name=name)

    try:
        return await idempotency.once(
            retry, now=now, work=create, made=_id_of, replay=_replayed_environment
        )
    except IntegrityError as exc:
        raise Conflict("This project already has an environment with this name.") from exc


async def get_environment(access: Access, *, environment_id: str) -> EnvironmentRecord:
    environment, _ = await access.require(rule("Query.environment"), environment_id=environment_id)
    return environment
