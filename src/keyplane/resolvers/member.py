"""Project members: invitations and their acceptance, role and environment changes, removal.

Who manages members (a *manager*), for reading them as for changing them:
- a user (dashboard session, or OAuth token carrying project:manage) whose role holds
  MANAGE_PROJECT across the whole project, i.e. an OWNER or ADMIN of every environment. An
  ADMIN limited to some environments is FORBIDDEN, as for createEnvironment: membership is a
  project-wide matter.
- an API key holding MANAGE_PROJECT. It acts as an ADMIN of its own project confined to its
  own environment: it grants exactly that environment (never "all"), it sees only the members
  who reach that environment, and it changes or removes only those limited to exactly it.

Rules, whoever manages:
- nobody grants a role above their own, nor changes or removes a member ranked above them
  (ROLE_RANK; FORBIDDEN); a key ranks as an ADMIN;
- a project keeps at least one OWNER of every environment: removing, demoting or narrowing
  the last one is a CONFLICT;
- Access reads memberships once per request, so every change applies from the next request.

A member's keys never do more than the member may do now (auth/authenticate.py intersects a
key's scopes with its creator's role in the key's environment on every request). So every change
that narrows a member moves the credentials' version once committed, and removing a member
revokes the keys they created in the project, or, with keepApiKeys, hands them to the caller,
who must hold MANAGE_PROJECT wherever those keys live.

Member events are project-wide in the activity log (environment_id=None) and name rows by id
(`member:mem_… user:usr_…`, `invitation:inv_…`), never by email: VIEW_ANALYTICS holders read
the log, and emails are for managers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.transactions import in_transaction

from keyplane.access import Access
from keyplane.auth import invitation as invitation_token
from keyplane.auth.verified import VerifiedCredentials
from keyplane.errors import BadUserInput, Conflict, Forbidden, NotFound
from keyplane.models import (
    ApiKey,
    Environment,
    Invitation,
    Member,
    MemberEnvironment,
    Project,
    User,
)
from keyplane.models.activity import ActivityKind
from keyplane.permissions.rules import rule
from keyplane.permissions.scopes import ROLE_RANK, Role, Scope
from keyplane.resolvers import idempotency, validate
from keyplane.resolvers.activity import record_event
from keyplane.resolvers.api_key import describe as describe_key

INVITATION_TTL = timedelta(days=7)
MAX_ENVIRONMENT_IDS = 100
KEY_RANK = ROLE_RANK[Role.ADMIN]
NO_INVITATION = "No pending invitation for your email matches this token."

# members, inviteMember, updateMember and removeMember share their rule (permissions/rules.py).
MANAGING = rule("Query.members")


@dataclass(frozen=True, slots=True)
class Grant:
    """A role over every environment of the project (environment_ids None) or a listed few."""

    role: Role
    environment_ids: frozenset[str] | None

    @property
    def all_environments(self) -> bool:
        return self.environment_ids is None

    @property
    def is_full_owner(self) -> bool:
        return self.role is Role.OWNER and self.environment_ids is None

    def reaches(self, environment_id: str) -> bool:
        return self.environment_ids is None or environment_id in self.environment_ids

    def describe(self) -> str:
        """`ADMIN in all environments`, `VIEWER in env_…, env_…` or `VIEWER in 7 environments`."""
        if self.environment_ids is None:
            where = "all environments"
        elif len(self.environment_ids) <= 3:
            where = ", ".join(sorted(self.environment_ids)) or "no environment"
        else:
            where = f"{len(self.environment_ids)} environments"
        return f"{self.role.value} in {where}"


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A member as the API shows it: its row and the grant read with it."""

    id: str
    project_id: str
    user_id: str
    grant: Grant
    created_at: datetime

    def describe(self) -> str:
        return f"member:{self.id} user:{self.user_id}"


@dataclass(frozen=True, slots=True)
class IssuedInvitation:
    """An invitation together with its token: the only moment the token exists here. A replay
    (resolvers/idempotency.py) answers with the invitation an earlier call made, and no token:
    it was never stored."""

    invitation: Invitation
    token: str | None
    replayed: bool = False


async def _replayed_invitation(invitation_id: str) -> IssuedInvitation:
    invitation = await Invitation.get_or_none(id=invitation_id)
    if invitation is None:
        raise idempotency.gone()
    return IssuedInvitation(invitation=invitation, token=None, replayed=True)


def _invitation_id(issued: IssuedInvitation) -> str:
    return issued.invitation.id


@dataclass(frozen=True, slots=True)
class Manager:
    """How far the caller's power over a project's members reaches."""

    rank: int
    # An API key's own environment: the only one it grants and whose members it manages.
    # None for a user who manages the whole project.
    environment_id: str | None

    def grants_only(self) -> frozenset[str] | None:
        return None if self.environment_id is None else frozenset({self.environment_id})

    def covers(self, grant: Grant) -> bool:
        """Could this manager have granted that (and so may it change or withdraw it)?"""
        if ROLE_RANK[grant.role] > self.rank:
            return False
        return self.environment_id is None or grant.environment_ids == self.grants_only()


def invitation_grant(invitation: Invitation) -> Grant:
    # An empty list means every environment of the project.
    return Grant(invitation.role, frozenset(invitation.environment_ids) or None)


async def _manager(access: Access, project_id: str) -> Manager:
    """The caller's power over members of a project it can see; FORBIDDEN when it has none."""
    key = access.principal.key
    if key is not None:
        access.admit(MANAGING, key.scopes)
        return Manager(rank=KEY_RANK, environment_id=key.environment_id)
    membership = await access.membership(project_id)
    scopes = await access.project_scopes(project_id)
    if membership is None or scopes is None:
        raise NotFound()
    access.admit(MANAGING, scopes)
    return Manager(rank=ROLE_RANK[membership.role], environment_id=None)


def _check_role(manager: Manager, role: Role) -> None:
    if ROLE_RANK[role] > manager.rank:
        raise Forbidden("You cannot grant a role above your own.")


async def _environments(
    manager: Manager, project_id: str, environment_ids: list[str]
) -> frozenset[str] | None:
    """The environments asked for (None: all of them), checked against the manager's reach."""
    if len(environment_ids) > MAX_ENVIRONMENT_IDS:
        raise BadUserInput(
            f"environmentIds takes at most {MAX_ENVIRONMENT_IDS} ids.", field="environmentIds"
        )
    wanted = frozenset(environment_ids)
    if manager.environment_id is not None:
        # Checked before any lookup, so a key learns nothing about other environments.
        if wanted != manager.grants_only():
            raise Forbidden(
                "An API key grants access to its own environment only: environmentIds must "
                "be exactly [its environment id]."
            )
        return wanted
    if not wanted:
        return None
    # Ids longer than ours name nothing; the database would refuse to even compare them.
    found = 0
    if all(len(i) <= 32 for i in wanted):
        found = await Environment.filter(project_id=project_id, id__in=list(wanted)).count()
    if found != len(wanted):
        raise BadUserInput(
            "environmentIds must name environments of this project.", field="environmentIds"
        )
    return wanted


async def _grants(members: list[Member]) -> dict[str, Grant]:
    limited = [m.id for m in members if not m.all_environments]
    reached: dict[str, set[str]] = {member_id: set() for member_id in limited}
    if limited:
        rows = await MemberEnvironment.filter(member_id__in=limited).values_list(
            "member_id", "environment_id"
        )
        for member_id, environment_id in rows:
            reached[str(member_id)].add(str(environment_id))
    return {
        m.id: Grant(m.role, None if m.all_environments else frozenset(reached[m.id]))
        for m in members
    }


def _record(member: Member, grant: Grant) -> MemberRecord:
    return MemberRecord(
        id=member.id,
        project_id=member.project_id,  # type: ignore[attr-defined]
        user_id=member.user_id,  # type: ignore[attr-defined]
        grant=grant,
        created_at=member.created_at,
    )


async def _lock_project(project_id: str) -> None:
    """Serialise member changes of one project (PostgreSQL row lock; SQLite writes are serial
    anyway), so two owners demoting each other cannot both pass the last-owner check."""
    # A whole-row fetch: Tortoise drops FOR UPDATE from values()/values_list() queries.
    await Project.filter(id=project_id).select_for_update().first()


async def _keeps_an_owner(project_id: str, member: MemberRecord, after: Grant | None) -> None:
    if not member.grant.is_full_owner or (after is not None and after.is_full_owner):
        return
    others = Member.filter(project_id=project_id, role=Role.OWNER, all_environments=True)
    if not await others.exclude(id=member.id).exists():
        raise Conflict("A project must keep at least one OWNER with access to every environment.")


async def _set_grant(member_id: str, grant: Grant) -> None:
    await Member.filter(id=member_id).update(
        role=grant.role, all_environments=grant.all_environments
    )
    await MemberEnvironment.filter(member_id=member_id).delete()
    await MemberEnvironment.bulk_create(
        [
            MemberEnvironment(member_id=member_id, environment_id=environment_id)
            for environment_id in sorted(grant.environment_ids or ())
        ]
    )


# --- reading -----------------------------------------------------------------------------------


async def list_members(access: Access, *, project_id: str) -> list[MemberRecord]:
    project = await access.project(project_id)
    manager = await _manager(access, project.id)
    query = Member.filter(project_id=project.id)
    if manager.environment_id is not None:
        granted = await MemberEnvironment.filter(
            environment_id=manager.environment_id, member__project_id=project.id
        ).values_list("member_id", flat=True)
        query = query.filter(Q(all_environments=True) | Q(id__in=list(granted)))
    members = await query.order_by("created_at", "id")
    grants = await _grants(members)
    return [_record(member, grants[member.id]) for member in members]


async def get_member(access: Access, *, member_id: str) -> MemberRecord:
    """One member, to whoever `list_members` shows it: NOT_FOUND outside the caller's project
    (or, for a key, for a member who does not reach its environment), FORBIDDEN as there."""
    record, _ = await _reachable_member(access, member_id)
    return record


async def _reachable_member(access: Access, member_id: str) -> tuple[MemberRecord, Manager]:
    """A member as `list_members` shows it, and the caller's power over its project."""
    access.require_authenticated()
    member = await Member.get_or_none(id=member_id)
    if member is None or not await access.can_see_project(
        member.project_id  # type: ignore[attr-defined]
    ):
        raise NotFound()
    manager = await _manager(access, member.project_id)  # type: ignore[attr-defined]
    record = _record(member, (await _grants([member]))[member.id])
    if manager.environment_id is not None and not record.grant.reaches(manager.environment_id):
        raise NotFound()
    return record, manager


async def environments_of(
    access: Access, *, project_id: str, environment_ids: frozenset[str] | None
) -> list[Environment]:
    """The environments a grant reaches, among those the caller can see (all: every one)."""
    visible = await access.visible_environments(project_id)
    if environment_ids is None:
        return visible
    return [environment for environment in visible if environment.id in environment_ids]


# --- inviting and accepting ----------------------------------------------------------------------


async def invite_member(
    access: Access,
    *,
    project_id: str,
    email: str,
    role: Role,
    environment_ids: list[str],
    now: datetime,
    idempotency_key: str | None = None,
) -> IssuedInvitation:
    """A pending invitation, valid for 7 days; inviting an email again replaces its pending
    invitation (the earlier token stops working) when the caller could have issued that one."""
    project = await access.project(project_id)
    manager = await _manager(access, project.id)
    retry = idempotency.retry_of(
        access,
        "inviteMember",
        idempotency_key,
        project_id=project_id,
        email=email,
        role=role,
        environment_ids=environment_ids,
    )
    if (made := await idempotency.earlier(retry, now=now)) is not None:
        return await _replayed_invitation(made)
    address = validate.email(email)
    _check_role(manager, role)
    grant = Grant(role, await _environments(manager, project.id, environment_ids))
    if await Member.filter(project_id=project.id, user__email=address).exists():
        raise Conflict("This email already belongs to a member of the project.")
    token = invitation_token.generate_token()

    async def invite() -> IssuedInvitation:
        await _lock_project(project.id)
        pending = await Invitation.filter(
            project_id=project.id, email=address, accepted_at__isnull=True, expires_at__gt=now
        )
        if not all(manager.covers(invitation_grant(earlier)) for earlier in pending):
            raise Conflict(
                "This email has a pending invitation that only a higher role can replace."
            )
        if pending:
            await Invitation.filter(id__in=[earlier.id for earlier in pending]).update(
                expires_at=now
            )
        invitation = await Invitation.create(
            project=project,
            email=address,
            role=grant.role,
            environment_ids=sorted(grant.environment_ids or ()),
            invited_by_id=access.principal.user_id,
            token_hash=invitation_token.hash_token(token),
            expires_at=now + INVITATION_TTL,
        )
        replaced = "".join(f" (replaces invitation:{earlier.id})" for earlier in pending)
        await record_event(
            ActivityKind.MEMBER_INVITED,
            access=access,
            project_id=project.id,
            environment_id=None,
            target=f"invitation:{invitation.id} as {grant.describe()}{replaced}",
            at=now,
        )
        return IssuedInvitation(invitation=invitation, token=token)

    return await idempotency.once(
        retry, now=now, work=invite, made=_invitation_id, replay=_replayed_invitation
    )


async def accept_invitation(access: Access, *, token: str, now: datetime) -> MemberRecord:
    """Join a project as the signed-in user the invitation was sent to.

    An unknown, malformed, used or expired token, or one sent to another email, is NOT_FOUND,
    all alike, so a token reveals nothing to anyone but its addressee.
    """
    principal = access.require_authenticated()
    if not principal.is_user or principal.user_id is None:
        raise Forbidden("Only a signed-in user can accept an invitation.")
    if not invitation_token.is_well_formed(token):
        raise NotFound(NO_INVITATION)
    invitation = await Invitation.get_or_none(token_hash=invitation_token.hash_token(token))
    user = await User.get_or_none(id=principal.user_id)
    if (
        invitation is None
        or user is None
        or invitation.accepted_at is not None
        or invitation.expires_at <= now
        or invitation.email != user.email
    ):
        raise NotFound(NO_INVITATION)
    # Deliberately not through `access`: it would cache "no membership" for the rest of this
    # request, and the returned Member's environments are resolved through it.
    project_id: str = invitation.project_id  # type: ignore[attr-defined]
    grant = invitation_grant(invitation)
    if await Member.filter(project_id=project_id, user_id=user.id).exists():
        raise Conflict("You are already a member of this project.")
    try:
        async with in_transaction():
            claimed = await Invitation.filter(id=invitation.id, accepted_at__isnull=True).update(
                accepted_at=now
            )
            if not claimed:
                raise NotFound(NO_INVITATION)  # accepted by a concurrent request
            if grant.environment_ids is not None:
                # Environments deleted since the invitation are dropped.
                existing = await Environment.filter(
                    project_id=project_id, id__in=list(grant.environment_ids)
                ).values_list("id", flat=True)
                grant = Grant(grant.role, frozenset(str(e) for e in existing))
            member = await Member.create(
                project_id=project_id,
                user_id=user.id,
                role=grant.role,
                all_environments=grant.all_environments,
            )
            await _set_grant(member.id, grant)
            record = _record(member, grant)
            await record_event(
                ActivityKind.MEMBER_UPDATED,
                access=access,
                project_id=project_id,
                environment_id=None,
                target=f"{record.describe()} joined as {grant.describe()} "
                f"(invitation:{invitation.id})",
                at=now,
            )
    except IntegrityError as exc:
        raise Conflict("You are already a member of this project.") from exc
    return record


# --- changing and removing -----------------------------------------------------------------------


async def _managed_member(access: Access, member_id: str) -> tuple[MemberRecord, Manager]:
    """A member the caller may change: NOT_FOUND out of reach, FORBIDDEN beyond its power."""
    record, manager = await _reachable_member(access, member_id)
    if ROLE_RANK[record.grant.role] > manager.rank:
        raise Forbidden("You cannot change or remove a member ranked above you.")
    if not manager.covers(record.grant):
        raise Forbidden("An API key manages only the members limited to its own environment.")
    return record, manager


async def _locked_member(access: Access, member_id: str) -> tuple[MemberRecord, Manager]:
    """Inside a transaction: lock the member's project, then read and check the member, so
    that concurrent changes to the same project are decided one after the other."""
    access.require_authenticated()
    found = await Member.filter(id=member_id).values_list("project_id", flat=True)
    if not found:
        raise NotFound()
    await _lock_project(str(found[0]))
    return await _managed_member(access, member_id)


class _Unchanged(Exception):
    """An update that asks for the grant the member already has."""

    def __init__(self, record: MemberRecord) -> None:
        super().__init__(record.id)
        self.record = record


async def update_member(
    access: Access,
    *,
    member_id: str,
    role: Role | None,
    environment_ids: list[str] | None,
    now: datetime,
    credentials: VerifiedCredentials,
) -> MemberRecord:
    """Change a member's role and/or environments (null: unchanged; [] for environments: all).
    The member's keys are narrowed with them, on every worker. An update that changes nothing
    writes nothing and leaves the credentials' version where it was."""
    try:
        async with credentials.change():
            record, manager = await _locked_member(access, member_id)
            new_role = record.grant.role if role is None else role
            _check_role(manager, new_role)
            reach = (
                record.grant.environment_ids
                if environment_ids is None
                else await _environments(manager, record.project_id, environment_ids)
            )
            wanted = Grant(new_role, reach)
            if wanted == record.grant:
                # Leaves change() by an exception, as a failed write does, so nothing moves.
                raise _Unchanged(record)
            await _keeps_an_owner(record.project_id, record, wanted)
            await _set_grant(record.id, wanted)
            await record_event(
                ActivityKind.MEMBER_UPDATED,
                access=access,
                project_id=record.project_id,
                environment_id=None,
                target=f"{record.describe()} {record.grant.describe()} -> {wanted.describe()}",
                at=now,
            )
    except _Unchanged as same:
        return same.record
    return MemberRecord(
        id=record.id,
        project_id=record.project_id,
        user_id=record.user_id,
        grant=wanted,
        created_at=record.created_at,
    )


async def remove_member(
    access: Access,
    *,
    member_id: str,
    keep_api_keys: bool = False,
    now: datetime,
    credentials: VerifiedCredentials,
) -> MemberRecord:
    """Remove a member (yourself included); returns what the membership was.

    The keys the member created in the project and did not revoke are revoked with it, or, with
    `keep_api_keys`, handed to the caller (FORBIDDEN, and nothing changes, unless the caller
    holds MANAGE_PROJECT in each of their environments). Their keys, revoked or handed over,
    are read again everywhere."""
    async with credentials.change():
        record, _ = await _locked_member(access, member_id)
        await _keeps_an_owner(record.project_id, record, None)
        keys = await ApiKey.filter(
            project_id=record.project_id, created_by_id=record.user_id, revoked_at__isnull=True
        ).order_by("created_at", "id")
        if keep_api_keys:
            await _hand_over(access, record, keys, now)
        else:
            await _revoke(access, record, keys, now)
        await MemberEnvironment.filter(member_id=record.id).delete()
        await Member.filter(id=record.id).delete()
        await record_event(
            ActivityKind.MEMBER_REMOVED,
            access=access,
            project_id=record.project_id,
            environment_id=None,
            target=f"{record.describe()} ({record.grant.describe()})",
            at=now,
        )
    return record


async def _revoke(access: Access, member: MemberRecord, keys: list[ApiKey], now: datetime) -> None:
    if not keys:
        return
    await ApiKey.filter(id__in=[key.id for key in keys]).update(revoked_at=now)
    for key in keys:
        await record_event(
            ActivityKind.KEY_REVOKED,
            access=access,
            project_id=member.project_id,
            environment_id=key.environment_id,  # type: ignore[attr-defined]
            target=f"{describe_key(key)}: its creator was removed ({member.describe()})",
            at=now,
        )


async def _hand_over(
    access: Access, member: MemberRecord, keys: list[ApiKey], now: datetime
) -> None:
    heir = access.principal.user_id
    assert heir is not None  # every authenticated caller acts for a user
    if keys and heir == member.user_id:
        raise BadUserInput(
            "keepApiKeys hands the keys to you, and you are the member being removed.",
            field="keepApiKeys",
        )
    for environment_id in sorted({key.environment_id for key in keys}):  # type: ignore[attr-defined]
        held = await access.scopes_in(project_id=member.project_id, environment_id=environment_id)
        if held is None or Scope.MANAGE_PROJECT not in held:
            raise Forbidden(
                "keepApiKeys needs MANAGE_PROJECT in every environment of the member's keys.",
                required_scopes=[Scope.MANAGE_PROJECT],
            )
    if not keys:
        return
    await ApiKey.filter(id__in=[key.id for key in keys]).update(created_by_id=heir)
    for key in keys:
        await record_event(
            ActivityKind.KEY_UPDATED,
            access=access,
            project_id=member.project_id,
            environment_id=key.environment_id,  # type: ignore[attr-defined]
            target=f"{describe_key(key)}: handed to user:{heir}, its creator was removed "
            f"({member.describe()})",
            at=now,
        )
