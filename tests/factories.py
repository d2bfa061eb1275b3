"""Rows built directly with Tortoise, for tests that need data but do not test how it is made.

Each factory takes, as keywords, what a test cares about and makes up the rest. Call them inside
the app's lifespan (the `app` fixture), which opens the database. Nothing here goes through
GraphQL or the resolvers, so no activity is logged and no rate limit is charged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette

from keyplane.auth import api_key as key_format
from keyplane.auth import dashboard
from keyplane.auth.passwords import Passwords
from keyplane.auth.principal import AuthKind
from keyplane.models import (
    ApiKey,
    Document,
    Environment,
    Member,
    MemberEnvironment,
    Project,
    Session,
    Template,
    TemplateVersion,
    User,
)
from keyplane.models.template import TemplateFormat
from keyplane.permissions.scopes import Role, Scope, encode_scopes
from keyplane.services import Services
from tests.helpers import Client, Tenant, unique

# Cheap argon2 parameters: the tests exercise our code, not the hash's cost.
FAST_PASSWORDS = Passwords(time_cost=1, memory_cost_kib=1024)
PASSWORD = "correct horse"


async def user(
    *, email: str | None = None, name: str | None = None, password: str = PASSWORD
) -> User:
    email = email or unique("user") + "@example.com"
    return await User.create(
        email=email,
        name=name or email.split("@")[0],
        password_hash=await FAST_PASSWORDS.hash(password),
    )


async def project(*, owner_id: str, name: str | None = None) -> Project:
    """A project and its owner's membership, as createProject makes them."""
    row = await Project.create(name=name or unique("project"), created_by_id=owner_id)
    await Member.create(project=row, user_id=owner_id, role=Role.OWNER, all_environments=True)
    return row


async def environment(*, project_id: str, name: str | None = None) -> Environment:
    return await Environment.create(project_id=project_id, name=name or unique("env"))


async def member(
    *,
    project_id: str,
    user_id: str,
    role: Role = Role.DEVELOPER,
    environment_ids: Sequence[str] | None = None,
) -> Member:
    """A member of the project; None for `environment_ids` means access to all of them."""
    row = await Member.create(
        project_id=project_id,
        user_id=user_id,
        role=role,
        all_environments=environment_ids is None,
    )
    for environment_id in environment_ids or ():
        await MemberEnvironment.create(member=row, environment_id=environment_id)
    return row


async def add_member(
    api: Client, project_id: str, role: Role, *, environment_ids: Sequence[str] | None = None
) -> str:
    """A second user in the project, for HTTP tests: signed up through the API for a token, made a
    member directly; None for `environment_ids` means all of them. Returns their token."""
    token = await api.sign_up()
    await member(
        project_id=project_id,
        user_id=await api.user_id(token),
        role=role,
        environment_ids=environment_ids,
    )
    return token


async def member_token(
    app: Starlette,
    project_id: str,
    role: Role,
    *,
    environment_ids: Sequence[str] | None = None,
) -> str:
    """A second user in the project, for schema-level tests: made a member directly (None for
    `environment_ids` means all of them); returns their dashboard session token."""
    services: Services = app.state.services
    row = await user()
    await member(project_id=project_id, user_id=row.id, role=role, environment_ids=environment_ids)
    return await session_token(
        row.id, jwt_secret=str(services.settings.jwt_secret), now=services.clock()
    )


@dataclass(frozen=True)
class IssuedKey:
    """A key row and the secret that authenticates as it (returned once, as createApiKey does)."""

    row: ApiKey
    secret: str

    @property
    def id(self) -> str:
        return self.row.id


async def owners_key(owner: Tenant, *scopes: Scope, **fields: Any) -> IssuedKey:
    """A key the tenant's owner made in their first environment, with these scopes
    (MANAGE_PROJECT when none is given) and any other field of `api_key`."""
    return await api_key(
        environment_id=owner.environment_id,
        created_by_id=owner.user_id,
        scopes=scopes or (Scope.MANAGE_PROJECT,),
        **fields,
    )


async def _project_of(environment_id: str) -> str:
    environment = await Environment.get(id=environment_id)
    project_id: str = environment.project_id  # type: ignore[attr-defined]
    return project_id


async def api_key(
    *,
    environment_id: str,
    created_by_id: str,
    scopes: Sequence[Scope] = (Scope.MANAGE_PROJECT,),
    name: str = "server",
    expires_at: datetime | None = None,
    revoked_at: datetime | None = None,
    rate_limit_per_minute: int | None = None,
) -> IssuedKey:
    secret = key_format.generate_secret()
    row = await ApiKey.create(
        environment_id=environment_id,
        project_id=await _project_of(environment_id),
        name=name,
        prefix=key_format.display_prefix(secret),
        secret_hash=key_format.hash_secret(secret),
        scopes=encode_scopes(frozenset(scopes)),
        created_by_id=created_by_id,
        expires_at=expires_at,
        revoked_at=revoked_at,
        rate_limit_per_minute=rate_limit_per_minute,
    )
    return IssuedKey(row=row, secret=secret)


async def key_pair(
    created_by_id: str, environment_id: str, scopes: Sequence[str] = ("MANAGE_PROJECT",)
) -> tuple[str, str]:
    """(key id, secret) of a key with these scopes (by name), as `Api.create_key` answers."""
    issued = await api_key(
        environment_id=environment_id,
        created_by_id=created_by_id,
        scopes=[Scope(scope) for scope in scopes],
    )
    return issued.id, issued.secret


async def session_token(
    user_id: str, *, jwt_secret: str, now: datetime, ttl: timedelta = timedelta(hours=1)
) -> str:
    """A dashboard session and its bearer token, as signIn makes them."""
    session = await Session.create(user_id=user_id, expires_at=now + ttl)
    token, _ = dashboard.issue_token(
        secret=jwt_secret, user_id=user_id, session_id=session.id, now=now, ttl=ttl
    )
    return token


async def template(
    *,
    environment_id: str,
    created_by_id: str,
    name: str | None = None,
    format: TemplateFormat = TemplateFormat.TEXT,
    content: str = "Hello {{ name }}",
    versions: Sequence[str] = (),
) -> Template:
    """A template whose draft is `content`, with `versions` frozen (their contents, oldest
    first) and the last of them published, as publishTemplate leaves it; a draft only (no
    published version) when `versions` is empty."""
    row = await Template.create(
        environment_id=environment_id,
        project_id=await _project_of(environment_id),
        name=name or unique("template"),
        format=format,
        content=content,
        created_by_id=created_by_id,
        latest_version=len(versions),
        published_version=len(versions) or None,
        has_unpublished_changes=not versions or versions[-1] != content,
    )
    for number, frozen in enumerate(versions, start=1):
        await TemplateVersion.create(
            template=row, version=number, content=frozen, published_by_id=created_by_id
        )
    return row


async def document(
    template: Template, *, created_by_id: str, content: str = "Hello Ada"
) -> Document:
    """A document of the template's published version, as a user's generateDocument makes it
    (the content is taken as given: nothing is rendered)."""
    assert template.published_version is not None, "documents are made of published templates"
    return await Document.create(
        environment_id=template.environment_id,  # type: ignore[attr-defined]
        template_id=template.id,
        template_version=template.published_version,
        format=template.format,
        content=content,
        created_by_id=created_by_id,
        auth_kind=AuthKind.JWT.value,
    )


async def tenant(
    app: Starlette, *, email: str | None = None, environments: Sequence[str | None] = (None,)
) -> Tenant:
    """The same Tenant as `helpers.new_tenant`, built from rows: a user with a dashboard
    session who owns a project with one environment per entry of `environments`."""
    services: Services = app.state.services
    owner = await user(email=email)
    row = await project(owner_id=owner.id)
    environment_ids = [(await environment(project_id=row.id, name=n)).id for n in environments]
    membership = await Member.get(project_id=row.id, user_id=owner.id)
    token = await session_token(
        owner.id, jwt_secret=str(services.settings.jwt_secret), now=services.clock()
    )
    return Tenant(
        token=token,
        user_id=owner.id,
        email=owner.email,
        member_id=membership.id,
        project_id=row.id,
        environment_ids=tuple(environment_ids),
    )
