"""What the calling principal may reach: environments, projects and the scopes it holds there.

Tenancy is a filter: anything outside the principal's reach answers NOT_FOUND, exactly as a
missing object would, so that existence never leaks.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyplane.auth.principal import Principal
from keyplane.errors import Forbidden, NotFound, Unauthenticated
from keyplane.models import Environment, Project
from keyplane.permissions.scopes import ROLE_SCOPES, Role, Scope
from keyplane.records import EnvironmentRecord, Lookups, RecordLoaders


@dataclass(frozen=True, slots=True)
class Membership:
    member_id: str
    role: Role
    all_environments: bool
    environment_ids: frozenset[str]

    def reaches(self, environment_id: str) -> bool:
        return self.all_environments or environment_id in self.environment_ids


class Access:
    """Per-request view of the principal's reach; memberships are read once per project."""

    def __init__(
        self, principal: Principal, *, records: RecordLoaders, ip: str = "unknown"
    ) -> None:
        self.principal = principal
        self.ip = ip  # the client address, for the activity log
        self._records = records
        self._memberships: dict[str, Membership | None] = {}
        self._email_rights: dict[str, bool] = {}

    @property
    def lookups(self) -> Lookups:
        return self._records.lookups

    def require_authenticated(self) -> Principal:
        if not self.principal.is_authenticated:
            raise Unauthenticated()
        return self.principal

    async def membership(self, project_id: str) -> Membership | None:
        user_id = self.principal.user_id
        if user_id is None or self.principal.key is not None:
            return None
        if project_id not in self._memberships:
            member = await self.lookups.member(project_id=project_id, user_id=user_id)
            self._memberships[project_id] = (
                None
                if member is None
                else Membership(
                    member_id=member.id,
                    role=Role(member.role),
                    all_environments=member.all_environments,
                    environment_ids=member.environment_ids,
                )
            )
        return self._memberships[project_id]

    async def scopes_in(self, *, project_id: str, environment_id: str) -> frozenset[Scope] | None:
        """The scopes held in an environment, or None when it is out of reach."""
        key = self.principal.key
        if key is not None:
            return key.scopes if key.environment_id == environment_id else None
        membership = await self.membership(project_id)
        if membership is None or not membership.reaches(environment_id):
            return None
        return ROLE_SCOPES[membership.role] & self.principal.token_scopes

    async def project_scopes(self, project_id: str) -> frozenset[Scope] | None:
        """Scopes held across the whole project (needs reach to every environment)."""
        if self.principal.key is not None:
            return None
        membership = await self.membership(project_id)
        if membership is None:
            return None
        if not membership.all_environments:
            return frozenset()
        return ROLE_SCOPES[membership.role] & self.principal.token_scopes

    def owns(self, user_id: str) -> bool:
        """Whether the caller is this person (a dashboard session or an OAuth token): a key
        acts for its creator but is not its creator."""
        principal = self.principal
        return principal.key is None and principal.is_user and principal.user_id == user_id

    def known_email_right(self, environment_id: str) -> bool | None:
        """`reads_emails` when it is known without reading anything, else None."""
        key = self.principal.key
        if key is not None:
            return key.environment_id == environment_id and Scope.MANAGE_PROJECT in key.scopes
        return self._email_rights.get(environment_id)

    async def reads_emails(self, environment_id: str) -> bool:
        """Whether the caller may read the email of a user reached through this environment
        (a key's creator, a document's maker): MANAGE_PROJECT there, as `members` needs.
        Decided once per environment and request: a page of keys asks once."""
        known = self.known_email_right(environment_id)
        if known is not None:
            return known
        [environment] = await self._records.environments([environment_id])
        scopes = (
            None
            if environment is None
            else await self.scopes_in(
                project_id=environment.project_id, environment_id=environment_id
            )
        )
        self._email_rights[environment_id] = scopes is not None and Scope.MANAGE_PROJECT in scopes
        return self._email_rights[environment_id]

    async def reads_project_emails(self, project_id: str) -> bool:
        """Whether the caller may read members' emails in this project: what `members` needs
        (MANAGE_PROJECT across the project, or a MANAGE_PROJECT key of the project)."""
        key = self.principal.key
        if key is not None:
            return key.project_id == project_id and Scope.MANAGE_PROJECT in key.scopes
        scopes = await self.project_scopes(project_id)
        return scopes is not None and Scope.MANAGE_PROJECT in scopes

    async def can_see_project(self, project_id: str) -> bool:
        key = self.principal.key
        if key is not None:
            return key.project_id == project_id
        return await self.membership(project_id) is not None

    async def environment(
        self, environment_id: str, *, any_of: frozenset[Scope] | None = None
    ) -> tuple[EnvironmentRecord, frozenset[Scope]]:
        """Load a reachable environment, requiring one of `any_of` there (FORBIDDEN if absent)."""
        self.require_authenticated()
        key = self.principal.key
        if key is not None and key.environment_id != environment_id:
            raise NotFound()  # a key reaches its own environment only: no need to read
        [environment] = await self._records.environments([environment_id])
        if environment is None:
            raise NotFound()
        scopes = await self.scopes_in(
            project_id=environment.project_id, environment_id=environment.id
        )
        if scopes is None:
            raise NotFound()
        if any_of is not None and not scopes & any_of:
            raise Forbidden()
        return environment, scopes

    async def project(self, project_id: str) -> Project:
        self.require_authenticated()
        project = await Project.get_or_none(id=project_id)
        if project is None or not await self.can_see_project(project.id):
            raise NotFound()
        return project

    async def visible_environments(self, project_id: str) -> list[Environment]:
        key = self.principal.key
        query = Environment.filter(project_id=project_id)
        if key is not None:
            if key.project_id != project_id:
                return []
            query = query.filter(id=key.environment_id)
        else:
            membership = await self.membership(project_id)
            if membership is None:
                return []
            if not membership.all_environments:
                query = query.filter(id__in=list(membership.environment_ids))
        return await query.order_by("created_at", "id")
