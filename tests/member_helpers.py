"""What the member tests share: their GraphQL documents, the tenants they start from and helpers.

The tests, one file per operation or rule (tests/test_member_*.py), go through GraphQL over HTTP.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from keyplane.models import ActivityEvent, Invitation, Member, MemberEnvironment
from keyplane.models.activity import ActivityKind
from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Answer, Client, Result, Tenant

TOKEN_RE = re.compile(r"^fmi_[0-9A-Za-z]{32}$")
PASSWORD = "correct horse"
CLIENT_IP = "203.0.113.7"
MISSING_PROJECT_ID = "prj_" + "0" * 20
MISSING_MEMBER_ID = "mem_" + "0" * 20
MISSING_ENVIRONMENT_ID = "env_" + "0" * 20
SEVEN_DAYS = 7 * 24 * 3600
SINGLE_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES", "VIEW_ANALYTICS", "MANAGE_PROJECT"]
MEMBER_EVENTS = [
    ActivityKind.MEMBER_INVITED,
    ActivityKind.MEMBER_UPDATED,
    ActivityKind.MEMBER_REMOVED,
]
NO_INVITATION = "No pending invitation for your email matches this token."

MEMBER_FIELDS = """
fragment MemberFields on Member {
  id role allEnvironments user { id email } environments { id name }
}
"""

MEMBERS = (
    """
query Members($projectId: ID!) { members(projectId: $projectId) { ...MemberFields } }
"""
    + MEMBER_FIELDS
)

INVITE = """
mutation Invite($input: InviteMemberInput!) {
  inviteMember(input: $input) {
    invitation { id email role allEnvironments environments { id name } expiresAt acceptedAt }
    token
  }
}
"""

ACCEPT = (
    """
mutation Accept($token: String!) { acceptInvitation(token: $token) { ...MemberFields } }
"""
    + MEMBER_FIELDS
)

UPDATE = (
    """
mutation Update($input: UpdateMemberInput!) { updateMember(input: $input) { ...MemberFields } }
"""
    + MEMBER_FIELDS
)

REMOVE = (
    """
mutation Remove($memberId: ID!) { removeMember(memberId: $memberId) { ...MemberFields } }
"""
    + MEMBER_FIELDS
)

PROJECT = "query($id: ID!) { project(id: $id) { id environments { id } } }"
ENVIRONMENT = "query($id: ID!) { environment(id: $id) { id } }"
CREATE_KEY = """
mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } } }
"""


# The member tests' tenants have two environments, so that a grant can name one of them.
DEV_AND_PROD = ("Development", "Production")


# --- helpers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Joined:
    """A user who joined a project through an invitation."""

    token: str
    user_id: str
    email: str
    member_id: str


async def whoami(api: Client, token: str) -> tuple[str, str]:
    data = (await api.gql("{ viewer { user { id email } } }", token=token)).ok()
    return data["viewer"]["user"]["id"], data["viewer"]["user"]["email"]


async def invite(
    api: Client,
    token: str,
    project_id: str,
    email: str,
    role: str = "DEVELOPER",
    environment_ids: list[str] | None = None,
) -> Answer:
    return await api.gql(
        INVITE,
        {
            "input": {
                "projectId": project_id,
                "email": email,
                "role": role,
                "environmentIds": environment_ids or [],
            }
        },
        token=token,
    )


async def accept(api: Client, token: str, invitation_token: str) -> Answer:
    return await api.gql(ACCEPT, {"token": invitation_token}, token=token)


_joined = itertools.count()


async def join(
    api: Client,
    tenant: Tenant,
    role: str = "DEVELOPER",
    environment_ids: list[str] | None = None,
    *,
    email: str | None = None,
) -> Joined:
    """Invite a new user, who signs up and accepts: the whole path, through the API."""
    address = email or f"joiner{next(_joined)}@example.com"
    invited = await invite(api, tenant.token, tenant.project_id, address, role, environment_ids)
    invitation_token = invited.ok()["inviteMember"]["token"]
    token = await api.sign_up(address, PASSWORD)
    member = (await accept(api, token, invitation_token)).ok()["acceptInvitation"]
    return Joined(token=token, user_id=member["user"]["id"], email=address, member_id=member["id"])


async def add_member(
    api: Client, tenant: Tenant, role: Role, environment_ids: list[str] | None = None
) -> Joined:
    """A member created straight in the database (for setup that is not under test)."""
    token = await api.sign_up()
    user_id, address = await whoami(api, token)
    member = await factories.member(
        project_id=tenant.project_id, user_id=user_id, role=role, environment_ids=environment_ids
    )
    return Joined(token=token, user_id=user_id, email=address, member_id=member.id)


async def members_of(api: Client, tenant: Tenant) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (
        await api.gql(MEMBERS, {"projectId": tenant.project_id}, token=tenant.token)
    ).ok()["members"]
    return found


async def state(project_id: str) -> dict[str, Any]:
    """Everything a member operation could change in a project, read from the database."""
    members = await Member.filter(project_id=project_id).order_by("id")
    grants = await MemberEnvironment.filter(member__project_id=project_id).values_list(
        "member_id", "environment_id"
    )
    invitations = await Invitation.filter(project_id=project_id).order_by("id")
    return {
        "members": [(m.id, m.role, m.all_environments) for m in members],
        "grants": sorted(grants),
        "invitations": [(i.id, i.expires_at, i.accepted_at) for i in invitations],
        "events": await ActivityEvent.filter(project_id=project_id).count(),
    }


async def events(project_id: str) -> list[dict[str, Any]]:
    """The project's member events, oldest first (other kinds are other tests' business)."""
    rows: list[dict[str, Any]] = (
        await ActivityEvent.filter(project_id=project_id, kind__in=MEMBER_EVENTS)
        .order_by("at", "id")
        .values("kind", "environment_id", "actor", "target", "ip")
    )
    return [{**row, "kind": str(row["kind"])} for row in rows]


def member_view(
    joined: Joined | Tenant,
    role: str,
    environments: list[tuple[str, str]],
    *,
    all_environments: bool,
) -> dict[str, Any]:
    member_id = joined.member_id
    return {
        "id": member_id,
        "role": role,
        "allEnvironments": all_environments,
        "user": {"id": joined.user_id, "email": joined.email},
        "environments": [{"id": i, "name": n} for i, n in environments],
    }


def both(tenant: Tenant) -> list[tuple[str, str]]:
    return [(tenant.environment_id, "Development"), (tenant.other_environment_id, "Production")]


def development(tenant: Tenant) -> list[tuple[str, str]]:
    return [(tenant.environment_id, "Development")]


def production(tenant: Tenant) -> list[tuple[str, str]]:
    return [(tenant.other_environment_id, "Production")]


def assert_refused(result: Answer, field: str, code: str) -> None:
    if isinstance(result, Result):
        assert result.status == 200
    # Every refusable field is nullable (partial data): the refused field alone is null.
    assert result.data == {field: None}
    assert result.codes == [code]


def assert_bad_input(result: Answer, field: str) -> None:
    if isinstance(result, Result):
        assert result.status == 200
    assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT", "field": field}]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)
