"""Projects and their environments."""

from __future__ import annotations

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from keyplane.access import Access
from keyplane.errors import Conflict, Forbidden
from keyplane.models import Environment, Member, Project
from keyplane.permissions.rules import rule
from keyplane.permissions.scopes import Role
from keyplane.records import EnvironmentRecord
from keyplane.resolvers import validate


async def create_project(access: Access, *, name: str) -> Project:
    principal = access.require_token(rule("Mutation.createProject"))
    if principal.user_id is None:
        raise Forbidden("Only a signed-in user can create projects.")
    name = validate.name(name)
    try:
        async with in_transaction():
            project = await Project.create(name=name, created_by_id=principal.user_id)
            await Member.create(
                project=project, user_id=principal.user_id, role=Role.OWNER, all_environments=True
            )
    except IntegrityError as exc:
        raise Conflict("You already have a project with this name.") from exc
    return project


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


async def create_environment(access: Access, *, project_id: str, name: str) -> Environment:
    project, _ = await access.require_project(rule("Mutation.createEnvironment"), project_id)
    name = validate.name(name)
    try:
        async with in_transaction():
            return await Environment.create(project=project, name=name)
    except IntegrityError as exc:
        raise Conflict("This project already has an environment with this name.") from exc


async def get_environment(access: Access, *, environment_id: str) -> EnvironmentRecord:
    environment, _ = await access.require(rule("Query.environment"), environment_id=environment_id)
    return environment
