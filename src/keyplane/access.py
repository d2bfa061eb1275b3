"""What the calling principal may reach: environments, projects and the scopes it holds there.

Tenancy is a filter: anything outside the principal's reach answers NOT_FOUND, exactly as a
missing object would, so that existence never leaks. What each field needs is its `Rule`
(`permissions/rules.py`): the resolvers ask `require(rule, ...)` or `reachable(row, rule)`, and
`viewer.can` asks `decide(rule, ...)`, which answers the same without running anything.

The order of the answers is fixed: no credential (UNAUTHENTICATED); a credential of the wrong
kind, or whose own scopes hold none of the rule's (FORBIDDEN); out of reach (NOT_FOUND); none
of the rule's scopes held there (FORBIDDEN). Every FORBIDDEN names the scopes that would have
allowed the call. A key admitted by a scope has that use recorded (ApiKey.scopesUsed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol, TypeVar

from keyplane.auth.principal import AuthKind, Principal
from keyplane.errors import Forbidden, KeyplaneError, NotFound, Unauthenticated
from keyplane.models import Environment, Project
from keyplane.permissions.rules import Reach, Rule
from keyplane.permissions.scopes import ROLE_SCOPES, Role, Scope
from keyplane.records import EnvironmentRecord, Lookups, MemberRecord, RecordLoaders

if TYPE_CHECKING:
    from keyplane.auth.verified import VerifiedCredentials

R = TypeVar("R")  # a row that lives in one environment: a key, a template, a document


class ScopeUses(Protocol):
    """Where admitted scopes are recorded (usage/buffer.py `UsageBuffer`)."""

    def scope_used(self, key_id: str, scope: str, at: datetime) -> None: ...


_WHERE = {
    Reach.OPEN: "",
    Reach.TOKEN: "",
    Reach.PROJECT: " across the project",
    Reach.ENVIRONMENT: " here",
}


def missing_scopes(rule: Rule) -> Forbidden:
    names = " or ".join(rule.scopes)
    return Forbidden(
        f"This needs the {names} scope{_WHERE[rule.reach]}.",
        required_scopes=rule.scopes,
        reason="MISSING_SCOPE",
    )


def credential_refusal(rule: Rule, principal: Principal) -> KeyplaneError | None:
    """What the credential alone refuses, before any data is read (None: nothing)."""
    if rule.reach is Reach.OPEN:
        return None
    if not principal.is_authenticated:
        return Unauthenticated()
    if rule.sessions_only and principal.kind is not AuthKind.JWT:
        return Forbidden("This operation is for dashboard sessions.", reason="SESSIONS_ONLY")
    if rule.people_only and principal.key is not None:
        return Forbidden("This operation is for signed-in users.", reason="PEOPLE_ONLY")
    if rule.scopes and not rule.self_read and not principal.token_scopes & rule.any_of:
        return missing_scopes(rule)
    return None


def check_credential(rule: Rule, principal: Principal) -> None:
    refusal = credential_refusal(rule, principal)
    if refusal is not None:
        raise refusal


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
        self,
        principal: Principal,
        *,
        records: RecordLoaders,
        ip: str = "unknown",
        uses: ScopeUses | None = None,
        now: datetime | None = None,
        credentials: VerifiedCredentials | None = None,
    ) -> None:
        self.principal = principal
        self.ip = ip  # the client address, for the activity log
        self._records = records
        self._credentials = credentials
        self._memberships: dict[str, Membership | None] = {}
        self._email_rights: dict[str, bool] = {}
        self._uses = uses
        self._now = now

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
            member = await self._member(project_id, user_id)
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

    async def _member(self, project_id: str, user_id: str) -> MemberRecord | None:
        """The membership row, kept across requests under the credentials' version: every
        change to a membership moves it (auth/verified.py). Only found rows are kept: joining
        a project moves nothing, so a kept "not a member" could outlive an invitation."""
        lookups = self.lookups
        credentials = self._credentials
        if credentials is None:
            return await lookups.member(project_id=project_id, user_id=user_id)
        # The version this request's rate-limit round trip confirmed (on Redis: no read more).
        version, _ = await credentials.request_version()
        return await credentials.through_at(
            version,
            credentials.creators,
            f"{project_id} {user_id}",
            lambda: lookups.member(project_id=project_id, user_id=user_id),
        )

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
            raise Forbidden(required_scopes=any_of, reason="MISSING_SCOPE")
        return environment, scopes

    # -- rules -------------------------------------------------------------------------------

    def admit(self, rule: Rule, held: frozenset[Scope], *, record: bool = True) -> Scope | None:
        """The scope of `held` that admits the call (None for a rule without scopes), recorded
        for a key; FORBIDDEN, naming the rule's scopes, when none does."""
        if not rule.scopes:
            return None
        scope = rule.admitting(held)
        if scope is None:
            raise missing_scopes(rule)
        key = self.principal.key
        if record and key is not None and self._uses is not None:
            self._uses.scope_used(key.key_id, scope, self._now or datetime.now(UTC))
        return scope

    def require_token(self, rule: Rule) -> Principal:
        """A rule that reaches the credential alone (TOKEN)."""
        check_credential(rule, self.principal)
        self.admit(rule, self.principal.token_scopes)
        return self.principal

    async def require(
        self, rule: Rule, *, environment_id: str
    ) -> tuple[EnvironmentRecord, frozenset[Scope]]:
        """A reachable environment where the rule is met, and the scopes held there."""
        check_credential(rule, self.principal)
        environment, held = await self.environment(environment_id)
        self.admit(rule, held)
        return environment, held

    async def require_project(
        self, rule: Rule, project_id: str
    ) -> tuple[Project, frozenset[Scope]]:
        """A visible project where the rule is met across every environment (a key: its own
        scopes, in its own environment), and the scopes held."""
        check_credential(rule, self.principal)
        project = await self.project(project_id)
        held = await self._project_held(project.id)
        self.admit(rule, held)
        return project, held

    async def _project_held(self, project_id: str) -> frozenset[Scope]:
        key = self.principal.key
        if key is not None:
            return key.scopes
        return await self.project_scopes(project_id) or frozenset()

    async def reachable(self, row: R | None, rule: Rule) -> tuple[R, frozenset[Scope]]:
        """The row (read by the caller) if its environment is in reach, else NOT_FOUND as if
        missing; FORBIDDEN unless the rule is met there (or the row is the calling key and the
        rule lets a key read itself)."""
        check_credential(rule, self.principal)
        if row is None:
            raise NotFound()
        environment_id: str = row.environment_id  # type: ignore[attr-defined]
        key = self.principal.key
        if key is not None and key.environment_id != environment_id:
            raise NotFound()
        held = await self._held_in(environment_id)
        if held is None:
            raise NotFound()
        if not (rule.self_read and key is not None and key.key_id == row.id):  # type: ignore[attr-defined]
            self.admit(rule, held)
        return row, held

    async def _held_in(self, environment_id: str) -> frozenset[Scope] | None:
        [environment] = await self._records.environments([environment_id])
        if environment is None:
            return None
        return await self.scopes_in(
            project_id=environment.project_id, environment_id=environment.id
        )

    async def decide(self, rule: Rule, *, environment_id: str | None) -> KeyplaneError | None:
        """What the rule answers the caller in an environment, without running the field or
        recording anything: None when allowed, else the error it would raise. Without an
        environment (and for a key, whose environment is its own), the credential's own
        scopes decide."""
        refusal = credential_refusal(rule, self.principal)
        if refusal is not None or rule.reach in (Reach.OPEN, Reach.TOKEN):
            if refusal is None and rule.reach is Reach.TOKEN:
                return self._refusal(rule, self.principal.token_scopes)
            return refusal
        key = self.principal.key
        if environment_id is None and key is not None:
            environment_id = key.environment_id
        if environment_id is None:
            return self._refusal(rule, self.principal.token_scopes)
        if rule.reach is Reach.PROJECT:
            # The environment names its project; seeing the project is what counts.
            [environment] = await self._records.environments([environment_id])
            if environment is None or not await self.can_see_project(environment.project_id):
                return NotFound()
            return self._refusal(rule, await self._project_held(environment.project_id))
        try:
            _, held = await self.environment(environment_id)
        except KeyplaneError as error:
            return error
        return self._refusal(rule, held)

    def _refusal(self, rule: Rule, held: frozenset[Scope]) -> KeyplaneError | None:
        try:
            self.admit(rule, held, record=False)
        except KeyplaneError as error:
            return error
        return None

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
