"""Project members through GraphQL over HTTP: members, inviteMember, acceptInvitation,
updateMember and removeMember.

For every operation: success, no credentials, callers without the right (every single-scope
key, OAuth tokens, lesser roles, an ADMIN limited to some environments), another project's
objects (answered exactly like missing ones), bad input, and the activity it records. Then the
rules: a project keeps an OWNER of every environment, nobody grants above their own role, a
MANAGE_PROJECT key acts as an ADMIN confined to its environment, changes apply on the next
request, and closed sign-up admits invited emails.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from unittest.mock import ANY

import pytest

from keyplane.models import ActivityEvent, Invitation, Member, MemberEnvironment
from keyplane.models.activity import ActivityKind
from keyplane.permissions.scopes import Role
from keyplane.settings import SignupPolicy
from tests.helpers import Api, Clock, Result, Tenant, new_tenant

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


async def whoami(api: Api, token: str) -> tuple[str, str]:
    data = (await api.gql("{ viewer { user { id email } } }", token=token)).ok()
    return data["viewer"]["user"]["id"], data["viewer"]["user"]["email"]


async def invite(
    api: Api,
    token: str,
    project_id: str,
    email: str,
    role: str = "DEVELOPER",
    environment_ids: list[str] | None = None,
) -> Result:
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


async def accept(api: Api, token: str, invitation_token: str) -> Result:
    return await api.gql(ACCEPT, {"token": invitation_token}, token=token)


_joined = itertools.count()


async def join(
    api: Api,
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
    api: Api, tenant: Tenant, role: Role, environment_ids: list[str] | None = None
) -> Joined:
    """A member created straight in the database (for setup that is not under test)."""
    token = await api.sign_up()
    user_id, address = await whoami(api, token)
    member = await Member.create(
        project_id=tenant.project_id,
        user_id=user_id,
        role=role,
        all_environments=environment_ids is None,
    )
    for environment_id in environment_ids or []:
        await MemberEnvironment.create(member=member, environment_id=environment_id)
    return Joined(token=token, user_id=user_id, email=address, member_id=member.id)


async def members_of(api: Api, tenant: Tenant) -> list[dict[str, Any]]:
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


def assert_refused(result: Result, field: str, code: str) -> None:
    assert result.status == 200
    # `members` is `[Member!]!`: its error nulls the whole response's data.
    assert result.data == (None if field == "members" else {field: None})
    assert result.codes == [code]


def assert_bad_input(result: Result, field: str) -> None:
    assert result.status == 200
    assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT", "field": field}]


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- what every managing operation does alike ----------------------------------------------------


@dataclass(frozen=True)
class Operation:
    document: str
    field: str
    # (tenant, id of a DEVELOPER limited to the tenant's Development environment) -> variables
    variables: Callable[[Tenant, str], dict[str, Any]]


OPERATIONS = {
    "members": Operation(MEMBERS, "members", lambda t, _: {"projectId": t.project_id}),
    "inviteMember": Operation(
        INVITE,
        "inviteMember",
        lambda t, _: {
            "input": {
                "projectId": t.project_id,
                "email": "newcomer@example.com",
                "role": "VIEWER",
                "environmentIds": [t.environment_id],
            }
        },
    ),
    "updateMember": Operation(
        UPDATE,
        "updateMember",
        lambda t, member_id: {
            "input": {"memberId": member_id, "role": "VIEWER", "environmentIds": [t.environment_id]}
        },
    ),
    "removeMember": Operation(REMOVE, "removeMember", lambda _, member_id: {"memberId": member_id}),
}
every_operation = pytest.mark.parametrize(
    "operation", list(OPERATIONS.values()), ids=list(OPERATIONS)
)


async def credential(api: Api, tenant: Tenant, kind: str) -> str:
    """`key:<SCOPE>`, `oauth:<scope words>`, `member:<ROLE>` (all environments) or
    `member:<ROLE>@Development` (limited to it), `owner`."""
    what, _, detail = kind.partition(":")
    if what == "owner":
        return tenant.token
    if what == "key":
        _, secret = await api.create_key(tenant.token, tenant.environment_id, [detail])
        return secret
    if what == "oauth":
        return api.oauth.token(email=tenant.email, scope=detail)
    role, _, limited = detail.partition("@")
    environments = [tenant.environment_id] if limited else None
    return (await add_member(api, tenant, Role(role), environments)).token


@every_operation
async def test_every_member_operation_without_credentials_is_unauthenticated(
    api: Api, operation: Operation
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    target = await add_member(api, owner, Role.DEVELOPER, [owner.environment_id])
    before = await state(owner.project_id)

    # when
    result = await api.gql(operation.document, operation.variables(owner, target.member_id))

    # then
    assert_refused(result, operation.field, "UNAUTHENTICATED")
    assert await state(owner.project_id) == before


@every_operation
@pytest.mark.parametrize(
    "caller",
    [
        "key:GENERATE_DOCUMENTS",
        "key:MANAGE_TEMPLATES",
        "key:VIEW_ANALYTICS",
        "oauth:documents:generate",
        "oauth:templates:manage",
        "oauth:analytics:view",
        "oauth:documents:generate templates:manage analytics:view",
        "member:DEVELOPER",
        "member:VIEWER",
        "member:ADMIN@Development",
        "member:OWNER@Development",
    ],
)
async def test_every_member_operation_refuses_a_caller_without_manage_project_everywhere(
    api: Api, operation: Operation, caller: str
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    target = await add_member(api, owner, Role.DEVELOPER, [owner.environment_id])
    token = await credential(api, owner, caller)
    before = await state(owner.project_id)

    # when
    result = await api.gql(
        operation.document, operation.variables(owner, target.member_id), token=token
    )

    # then
    assert_refused(result, operation.field, "FORBIDDEN")
    assert await state(owner.project_id) == before


@every_operation
@pytest.mark.parametrize(
    "caller", ["owner", "member:ADMIN", "oauth:project:manage", "key:MANAGE_PROJECT"]
)
async def test_every_member_operation_is_open_to_a_project_wide_manager_and_a_manage_key(
    api: Api, operation: Operation, caller: str
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    target = await add_member(api, owner, Role.DEVELOPER, [owner.environment_id])
    token = await credential(api, owner, caller)

    # when
    result = await api.gql(
        operation.document, operation.variables(owner, target.member_id), token=token
    )

    # then
    assert result.ok()[operation.field] is not None


@every_operation
@pytest.mark.parametrize("caller", ["owner", "key:MANAGE_PROJECT"])
async def test_every_member_operation_on_another_project_answers_like_a_missing_id(
    api: Api, operation: Operation, caller: str
) -> None:
    # given
    intruder = await new_tenant(api, environments=DEV_AND_PROD)
    token = await credential(api, intruder, caller)
    victim = await new_tenant(api, environments=DEV_AND_PROD)
    target = await add_member(api, victim, Role.DEVELOPER, [victim.environment_id])
    missing = Tenant(
        token="",
        user_id="",
        email="",
        member_id=MISSING_MEMBER_ID,
        project_id=MISSING_PROJECT_ID,
        environment_ids=(MISSING_ENVIRONMENT_ID, MISSING_ENVIRONMENT_ID),
    )
    before = await state(victim.project_id)

    # when
    elsewhere = await api.gql(
        operation.document, operation.variables(victim, target.member_id), token=token
    )
    nowhere = await api.gql(
        operation.document, operation.variables(missing, MISSING_MEMBER_ID), token=token
    )

    # then
    assert_refused(elsewhere, operation.field, "NOT_FOUND")
    assert elsewhere.body == nowhere.body
    assert await state(victim.project_id) == before


# --- members -------------------------------------------------------------------------------------


async def test_members_lists_everyone_with_their_role_and_environments_oldest_first(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    developer = await join(api, owner, "DEVELOPER", [owner.other_environment_id])
    viewer = await join(api, owner, "VIEWER")

    # when
    found = await members_of(api, owner)

    # then
    assert found == [
        member_view(owner, "OWNER", both(owner), all_environments=True),
        member_view(developer, "DEVELOPER", production(owner), all_environments=False),
        member_view(viewer, "VIEWER", both(owner), all_environments=True),
    ]


async def test_a_member_with_all_environments_also_reaches_environments_created_later(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    viewer = await join(api, owner, "VIEWER")
    limited = await join(api, owner, "VIEWER", [owner.environment_id])

    # when
    staging = await api.create_environment(owner.token, owner.project_id, "Staging")
    found = {m["id"]: m["environments"] for m in await members_of(api, owner)}

    # then
    assert [e["id"] for e in found[viewer.member_id]] == [
        owner.environment_id,
        owner.other_environment_id,
        staging,
    ]
    assert found[limited.member_id] == [{"id": owner.environment_id, "name": "Development"}]
    assert (await api.gql(ENVIRONMENT, {"id": staging}, token=viewer.token)).ok()


# --- inviteMember --------------------------------------------------------------------------------


async def test_inviting_returns_the_invitation_and_a_token_valid_for_seven_days(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    before = clock()

    # when
    result = await invite(
        api, owner.token, owner.project_id, " Grace@Example.com ", "ADMIN", [owner.environment_id]
    )

    # then
    payload = result.ok()["inviteMember"]
    assert payload == {
        "invitation": {
            "id": ANY,
            "email": "grace@example.com",
            "role": "ADMIN",
            "allEnvironments": False,
            "environments": [{"id": owner.environment_id, "name": "Development"}],
            "expiresAt": ANY,
            "acceptedAt": None,
        },
        "token": ANY,
    }
    assert TOKEN_RE.match(payload["token"])
    assert payload["invitation"]["id"].startswith("inv_")
    expires_at = instant(payload["invitation"]["expiresAt"])
    assert (
        before + timedelta(seconds=SEVEN_DAYS)
        <= expires_at
        <= clock() + timedelta(seconds=SEVEN_DAYS)
    )


async def test_an_invitation_without_environments_grants_all_of_them(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)

    # when
    result = await invite(api, owner.token, owner.project_id, "all@example.com", "VIEWER", [])

    # then
    invitation = result.ok()["inviteMember"]["invitation"]
    assert invitation["allEnvironments"] is True
    assert invitation["environments"] == [
        {"id": owner.environment_id, "name": "Development"},
        {"id": owner.other_environment_id, "name": "Production"},
    ]


async def test_the_invitation_token_is_stored_only_as_its_hash(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)

    # when
    payload = (await invite(api, owner.token, owner.project_id, "h@example.com")).ok()
    token = payload["inviteMember"]["token"]
    stored = await Invitation.get(id=payload["inviteMember"]["invitation"]["id"])

    # then
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(await Invitation.filter(id=stored.id).values())


async def test_inviting_records_member_invited_for_the_whole_project(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)

    # when
    payload = (await invite(api, owner.token, owner.project_id, "e@example.com", "VIEWER")).ok()[
        "inviteMember"
    ]

    # then
    assert (await events(owner.project_id))[-1] == {
        "kind": "MEMBER_INVITED",
        "environment_id": None,
        "actor": f"user:{owner.user_id}",
        "target": f"invitation:{payload['invitation']['id']} as VIEWER in all environments",
        "ip": CLIENT_IP,
    }


async def test_inviting_an_existing_member_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await join(api, owner, "VIEWER")
    before = await state(owner.project_id)

    # when
    again = await invite(api, owner.token, owner.project_id, member.email.upper())
    yourself = await invite(api, owner.token, owner.project_id, owner.email)

    # then
    assert_refused(again, "inviteMember", "CONFLICT")
    assert_refused(yourself, "inviteMember", "CONFLICT")
    assert await state(owner.project_id) == before


async def test_inviting_an_email_again_replaces_its_pending_invitation(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    first = (await invite(api, owner.token, owner.project_id, "twice@example.com", "VIEWER")).ok()
    second = (await invite(api, owner.token, owner.project_id, "twice@example.com", "ADMIN")).ok()
    token = await api.sign_up("twice@example.com", PASSWORD)

    # when
    stale = await accept(api, token, first["inviteMember"]["token"])
    fresh = await accept(api, token, second["inviteMember"]["token"])

    # then
    assert_refused(stale, "acceptInvitation", "NOT_FOUND")
    assert fresh.ok()["acceptInvitation"]["role"] == "ADMIN"
    assert (await events(owner.project_id))[1]["target"].endswith(
        f"(replaces invitation:{first['inviteMember']['invitation']['id']})"
    )


@pytest.mark.parametrize(
    ("email", "environments", "field"),
    [
        ("not-an-email", "none", "email"),
        ("", "none", "email"),
        ("x@example.com", "missing", "environmentIds"),
        ("x@example.com", "another project's", "environmentIds"),
        ("x@example.com", "101", "environmentIds"),
    ],
)
async def test_inviting_with_bad_input_names_the_field(
    api: Api, email: str, environments: str, field: str
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    elsewhere = await new_tenant(api, environments=DEV_AND_PROD)
    environment_ids = {
        "none": [],
        "missing": [owner.environment_id, MISSING_ENVIRONMENT_ID],
        "another project's": [elsewhere.environment_id],
        "101": [owner.environment_id] * 101,
    }[environments]
    before = await state(owner.project_id)

    # when
    result = await invite(api, owner.token, owner.project_id, email, "VIEWER", environment_ids)

    # then
    assert_bad_input(result, field)
    assert await state(owner.project_id) == before


async def test_an_unknown_role_is_refused_by_graphql_validation(api: Api) -> None:
    owner = await new_tenant(api, environments=DEV_AND_PROD)

    result = await invite(api, owner.token, owner.project_id, "x@example.com", "SUPERUSER")

    assert result.data is None
    assert len(result.errors) == 1


# --- acceptInvitation ----------------------------------------------------------------------------


async def test_accepting_creates_the_member_with_the_invited_role_and_environments(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (
        await invite(
            api, owner.token, owner.project_id, "ann@example.com", "ADMIN", [owner.environment_id]
        )
    ).ok()["inviteMember"]
    token = await api.sign_up("ann@example.com", PASSWORD)
    user_id, _ = await whoami(api, token)

    # when
    member = (await accept(api, token, invited["token"])).ok()["acceptInvitation"]

    # then
    joined = Joined(token=token, user_id=user_id, email="ann@example.com", member_id=member["id"])
    expected = member_view(joined, "ADMIN", development(owner), all_environments=False)
    assert member == expected
    assert (await members_of(api, owner))[1] == expected
    stored = await Invitation.get(id=invited["invitation"]["id"])
    assert stored.accepted_at is not None
    assert stored.accepted_at <= clock()


async def test_accepting_takes_effect_on_the_next_request(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, "bo@example.com", "VIEWER")).ok()[
        "inviteMember"
    ]
    token = await api.sign_up("bo@example.com", PASSWORD)
    outsider = await api.gql(PROJECT, {"id": owner.project_id}, token=token)

    # when
    (await accept(api, token, invited["token"])).ok()
    insider = await api.gql(PROJECT, {"id": owner.project_id}, token=token)

    # then
    assert outsider.codes == ["NOT_FOUND"]
    assert insider.ok()["project"] == {
        "id": owner.project_id,
        "environments": [{"id": owner.environment_id}, {"id": owner.other_environment_id}],
    }


async def test_accepting_records_the_join_as_member_updated_by_the_new_member(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (
        await invite(
            api,
            owner.token,
            owner.project_id,
            "jo@example.com",
            "DEVELOPER",
            [owner.other_environment_id],
        )
    ).ok()["inviteMember"]
    token = await api.sign_up("jo@example.com", PASSWORD)

    # when
    member = (await accept(api, token, invited["token"])).ok()["acceptInvitation"]

    # then
    user_id = member["user"]["id"]
    assert (await events(owner.project_id))[-1] == {
        "kind": "MEMBER_UPDATED",
        "environment_id": None,
        "actor": f"user:{user_id}",
        "target": f"member:{member['id']} user:{user_id} joined as DEVELOPER in "
        f"{owner.other_environment_id} (invitation:{invited['invitation']['id']})",
        "ip": CLIENT_IP,
    }


async def test_an_invitation_cannot_be_used_twice(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, "once@example.com")).ok()[
        "inviteMember"
    ]
    token = await api.sign_up("once@example.com", PASSWORD)
    (await accept(api, token, invited["token"])).ok()
    before = await state(owner.project_id)

    # when
    again = await accept(api, token, invited["token"])

    # then
    assert_refused(again, "acceptInvitation", "NOT_FOUND")
    assert again.errors[0]["message"] == NO_INVITATION
    assert await state(owner.project_id) == before


async def test_wrong_email_expired_used_unknown_or_malformed_tokens_all_answer_alike(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    for_ann = (await invite(api, owner.token, owner.project_id, "ann@example.com")).ok()
    expiring = (await invite(api, owner.token, owner.project_id, "eve@example.com")).ok()
    used = (await invite(api, owner.token, owner.project_id, "ulf@example.com")).ok()
    await api.sign_up("ann@example.com", PASSWORD)
    await api.sign_up("eve@example.com", PASSWORD)
    ulf = await api.sign_up("ulf@example.com", PASSWORD)
    (await accept(api, ulf, used["inviteMember"]["token"])).ok()
    intruder = await api.sign_up("mallory@example.com", PASSWORD)
    before = await state(owner.project_id)

    # when
    wrong_email = await accept(api, intruder, for_ann["inviteMember"]["token"])
    reused = await accept(api, intruder, used["inviteMember"]["token"])
    unknown = await accept(api, intruder, "fmi_" + "A" * 32)
    malformed = await accept(api, intruder, "not a token")
    clock.advance(SEVEN_DAYS + 1)
    # Dashboard tokens are checked against real time; an OAuth token works on a moved clock.
    eve = api.oauth.token(sub="eve-at-issuer", email="eve@example.com", scope="project:manage")
    expired = await accept(api, eve, expiring["inviteMember"]["token"])

    # then
    for result in (wrong_email, reused, unknown, malformed, expired):
        assert result.body == {
            "data": {"acceptInvitation": None},
            "errors": [
                {
                    "message": NO_INVITATION,
                    "locations": ANY,
                    "path": ["acceptInvitation"],
                    "extensions": {"code": "NOT_FOUND"},
                }
            ],
            "extensions": {"cost": ANY},
        }
    assert await state(owner.project_id) == before


async def test_an_invitation_is_valid_until_just_before_seven_days(api: Api, clock: Clock) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, "late@example.com")).ok()

    # when
    await api.sign_up("late@example.com", PASSWORD)
    clock.advance(SEVEN_DAYS - 60)
    token = api.oauth.token(sub="late-at-issuer", email="late@example.com", scope="project:manage")
    result = await accept(api, token, invited["inviteMember"]["token"])

    # then
    assert result.ok()["acceptInvitation"]["role"] == "DEVELOPER"


async def test_accepting_when_already_a_member_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await add_member(api, owner, Role.VIEWER)
    # An invitation issued before the user became a member by another way.
    await Member.filter(id=member.member_id).delete()
    invited = (await invite(api, owner.token, owner.project_id, member.email)).ok()
    await Member.create(project_id=owner.project_id, user_id=member.user_id, role=Role.VIEWER)
    before = await state(owner.project_id)

    # when
    result = await accept(api, member.token, invited["inviteMember"]["token"])

    # then
    assert_refused(result, "acceptInvitation", "CONFLICT")
    assert await state(owner.project_id) == before


async def test_accepting_without_credentials_is_unauthenticated(api: Api) -> None:
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, "z@example.com")).ok()

    result = await api.gql(ACCEPT, {"token": invited["inviteMember"]["token"]})

    assert_refused(result, "acceptInvitation", "UNAUTHENTICATED")


@pytest.mark.parametrize("scope", SINGLE_SCOPES)
async def test_an_api_key_cannot_accept_an_invitation(api: Api, scope: str) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    other = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, other.email)).ok()
    _, secret = await api.create_key(other.token, other.environment_id, [scope])
    before = await state(owner.project_id)

    # when
    result = await accept(api, secret, invited["inviteMember"]["token"])

    # then
    assert_refused(result, "acceptInvitation", "FORBIDDEN")
    assert await state(owner.project_id) == before


@pytest.mark.parametrize(
    ("scope", "outcome"),
    [
        ("analytics:view", "FORBIDDEN"),
        ("documents:generate", "FORBIDDEN"),
        ("project:manage", "OK"),
    ],
)
async def test_an_oauth_token_accepts_an_invitation_only_with_project_manage(
    api: Api, scope: str, outcome: str
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, "oa@example.com", "VIEWER")).ok()
    await api.sign_up("oa@example.com", PASSWORD)
    token = api.oauth.token(sub="oa-at-issuer", email="oa@example.com", scope=scope)

    # when
    result = await accept(api, token, invited["inviteMember"]["token"])

    # then
    if outcome == "OK":
        assert result.ok()["acceptInvitation"]["role"] == "VIEWER"
    else:
        assert_refused(result, "acceptInvitation", outcome)


# --- updateMember --------------------------------------------------------------------------------


async def test_updating_changes_role_and_environments(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await join(api, owner, "VIEWER")

    # when
    narrowed = await api.gql(
        UPDATE,
        {
            "input": {
                "memberId": member.member_id,
                "role": "DEVELOPER",
                "environmentIds": [owner.other_environment_id],
            }
        },
        token=owner.token,
    )
    widened = await api.gql(
        UPDATE, {"input": {"memberId": member.member_id, "environmentIds": []}}, token=owner.token
    )
    renamed_role = await api.gql(
        UPDATE, {"input": {"memberId": member.member_id, "role": "ADMIN"}}, token=owner.token
    )

    # then
    assert narrowed.ok()["updateMember"] == member_view(
        member, "DEVELOPER", production(owner), all_environments=False
    )
    assert widened.ok()["updateMember"] == member_view(
        member, "DEVELOPER", both(owner), all_environments=True
    )
    assert renamed_role.ok()["updateMember"] == member_view(
        member, "ADMIN", both(owner), all_environments=True
    )
    assert (await members_of(api, owner))[1] == renamed_role.data["updateMember"]


async def test_updating_records_member_updated_and_a_no_op_records_nothing(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await join(api, owner, "VIEWER")
    count = len(await events(owner.project_id))

    # when
    (
        await api.gql(
            UPDATE,
            {"input": {"memberId": member.member_id, "environmentIds": [owner.environment_id]}},
            token=owner.token,
        )
    ).ok()
    unchanged = await api.gql(
        UPDATE, {"input": {"memberId": member.member_id, "role": "VIEWER"}}, token=owner.token
    )

    # then
    assert unchanged.ok()["updateMember"]["environments"] == [
        {"id": owner.environment_id, "name": "Development"}
    ]
    logged = await events(owner.project_id)
    assert logged[count:] == [
        {
            "kind": "MEMBER_UPDATED",
            "environment_id": None,
            "actor": f"user:{owner.user_id}",
            "target": f"member:{member.member_id} user:{member.user_id} VIEWER in all "
            f"environments -> VIEWER in {owner.environment_id}",
            "ip": CLIENT_IP,
        }
    ]


@pytest.mark.parametrize(
    ("environments", "field"),
    [
        ("missing", "environmentIds"),
        ("another project's", "environmentIds"),
        ("101", "environmentIds"),
    ],
)
async def test_updating_with_bad_input_names_the_field(
    api: Api, environments: str, field: str
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    elsewhere = await new_tenant(api, environments=DEV_AND_PROD)
    member = await add_member(api, owner, Role.VIEWER)
    environment_ids = {
        "missing": [MISSING_ENVIRONMENT_ID],
        "another project's": [owner.environment_id, elsewhere.environment_id],
        "101": [owner.environment_id] * 101,
    }[environments]
    before = await state(owner.project_id)

    # when
    result = await api.gql(
        UPDATE,
        {"input": {"memberId": member.member_id, "environmentIds": environment_ids}},
        token=owner.token,
    )

    # then
    assert_bad_input(result, field)
    assert await state(owner.project_id) == before


# --- removeMember --------------------------------------------------------------------------------


async def test_removing_returns_what_the_membership_was_and_records_member_removed(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await join(api, owner, "DEVELOPER", [owner.environment_id])

    # when
    result = await api.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)

    # then
    assert result.ok()["removeMember"] == member_view(
        member, "DEVELOPER", development(owner), all_environments=False
    )
    assert [m["id"] for m in await members_of(api, owner)] == [owner.member_id]
    assert await MemberEnvironment.filter(member_id=member.member_id).count() == 0
    assert (await events(owner.project_id))[-1] == {
        "kind": "MEMBER_REMOVED",
        "environment_id": None,
        "actor": f"user:{owner.user_id}",
        "target": f"member:{member.member_id} user:{member.user_id} "
        f"(DEVELOPER in {owner.environment_id})",
        "ip": CLIENT_IP,
    }


async def test_removing_twice_answers_not_found(api: Api) -> None:
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await add_member(api, owner, Role.VIEWER)
    (await api.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)).ok()

    again = await api.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)

    assert_refused(again, "removeMember", "NOT_FOUND")


async def test_a_member_may_leave_a_project_it_manages(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")

    # when
    result = await api.gql(REMOVE, {"memberId": admin.member_id}, token=admin.token)

    # then
    assert result.ok()["removeMember"]["id"] == admin.member_id
    assert (await api.gql(PROJECT, {"id": owner.project_id}, token=admin.token)).codes == [
        "NOT_FOUND"
    ]


# --- a project keeps an OWNER of every environment -----------------------------------------------


@pytest.mark.parametrize(
    "change",
    ["remove", "demote to ADMIN", "narrow to one environment"],
)
async def test_the_last_owner_cannot_be_removed_demoted_or_narrowed(api: Api, change: str) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    await join(api, owner, "ADMIN")
    # An OWNER limited to some environments does not count as keeping the project.
    await add_member(api, owner, Role.OWNER, [owner.environment_id])
    before = await state(owner.project_id)

    # when
    if change == "remove":
        result = await api.gql(REMOVE, {"memberId": owner.member_id}, token=owner.token)
        field = "removeMember"
    else:
        update: dict[str, Any] = {"memberId": owner.member_id}
        if change == "demote to ADMIN":
            update["role"] = "ADMIN"
        else:
            update["environmentIds"] = [owner.environment_id]
        result = await api.gql(UPDATE, {"input": update}, token=owner.token)
        field = "updateMember"

    # then
    assert_refused(result, field, "CONFLICT")
    assert await state(owner.project_id) == before


async def test_with_a_second_owner_one_may_step_down_but_not_both(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    second = await join(api, owner, "OWNER")

    # when
    first_steps_down = await api.gql(
        UPDATE, {"input": {"memberId": owner.member_id, "role": "ADMIN"}}, token=owner.token
    )
    second_leaves = await api.gql(REMOVE, {"memberId": second.member_id}, token=second.token)

    # then
    assert first_steps_down.ok()["updateMember"]["role"] == "ADMIN"
    assert_refused(second_leaves, "removeMember", "CONFLICT")


async def test_two_owners_leaving_at_once_leave_one_owner(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    second = await join(api, owner, "OWNER")

    # when
    results = await asyncio.gather(
        api.gql(REMOVE, {"memberId": owner.member_id}, token=owner.token),
        api.gql(REMOVE, {"memberId": second.member_id}, token=second.token),
    )

    # then
    assert sorted(str(r.codes[0]) if r.errors else "OK" for r in results) == ["CONFLICT", "OK"]
    assert await Member.filter(project_id=owner.project_id, role=Role.OWNER).count() == 1


# --- nobody grants above their own role ----------------------------------------------------------


async def test_an_admin_cannot_invite_or_promote_an_owner(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")
    developer = await add_member(api, owner, Role.DEVELOPER)
    before = await state(owner.project_id)

    # when
    invited = await invite(api, admin.token, owner.project_id, "boss@example.com", "OWNER")
    promoted = await api.gql(
        UPDATE, {"input": {"memberId": developer.member_id, "role": "OWNER"}}, token=admin.token
    )
    self_promoted = await api.gql(
        UPDATE, {"input": {"memberId": admin.member_id, "role": "OWNER"}}, token=admin.token
    )

    # then
    assert_refused(invited, "inviteMember", "FORBIDDEN")
    assert_refused(promoted, "updateMember", "FORBIDDEN")
    assert_refused(self_promoted, "updateMember", "FORBIDDEN")
    assert await state(owner.project_id) == before


async def test_an_admin_cannot_change_or_remove_an_owner(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    second_owner = await add_member(api, owner, Role.OWNER)
    admin = await join(api, owner, "ADMIN")
    before = await state(owner.project_id)

    # when
    demoted = await api.gql(
        UPDATE, {"input": {"memberId": second_owner.member_id, "role": "VIEWER"}}, token=admin.token
    )
    removed = await api.gql(REMOVE, {"memberId": second_owner.member_id}, token=admin.token)

    # then
    assert_refused(demoted, "updateMember", "FORBIDDEN")
    assert_refused(removed, "removeMember", "FORBIDDEN")
    assert await state(owner.project_id) == before


async def test_an_admin_manages_admins_and_below(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")
    other_admin = await add_member(api, owner, Role.ADMIN)

    # when
    invited = await invite(api, admin.token, owner.project_id, "peer@example.com", "ADMIN")
    demoted = await api.gql(
        UPDATE, {"input": {"memberId": other_admin.member_id, "role": "VIEWER"}}, token=admin.token
    )

    # then
    assert invited.ok()["inviteMember"]["invitation"]["role"] == "ADMIN"
    assert demoted.ok()["updateMember"]["role"] == "VIEWER"


async def test_an_oauth_token_manages_members_with_its_users_role(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")
    token = api.oauth.token(sub="admin-at-issuer", email=admin.email, scope="project:manage")

    # when
    as_admin = await invite(api, token, owner.project_id, "x@example.com", "ADMIN")
    above = await invite(api, token, owner.project_id, "y@example.com", "OWNER")

    # then
    assert as_admin.ok()["inviteMember"]["invitation"]["role"] == "ADMIN"
    assert_refused(above, "inviteMember", "FORBIDDEN")
    assert (await events(owner.project_id))[-1]["actor"] == (
        f"oauth:integration-client for user:{admin.user_id}"
    )


async def test_a_lower_role_cannot_replace_an_invitation_issued_by_a_higher_one(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")
    (await invite(api, owner.token, owner.project_id, "heir@example.com", "OWNER")).ok()
    before = await state(owner.project_id)

    # when
    result = await invite(api, admin.token, owner.project_id, "heir@example.com", "VIEWER")

    # then
    assert_refused(result, "inviteMember", "CONFLICT")
    assert await state(owner.project_id) == before


# --- a MANAGE_PROJECT key acts as an ADMIN of its own environment --------------------------------


async def test_a_manage_key_invites_to_its_own_environment_up_to_admin(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    key_id, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await invite(
        api, secret, owner.project_id, "k@example.com", "ADMIN", [owner.environment_id]
    )
    token = await api.sign_up("k@example.com", PASSWORD)
    member = (await accept(api, token, result.ok()["inviteMember"]["token"])).ok()

    # then
    assert result.data["inviteMember"]["invitation"]["environments"] == [
        {"id": owner.environment_id, "name": "Development"}
    ]
    assert member["acceptInvitation"]["environments"] == [
        {"id": owner.environment_id, "name": "Development"}
    ]
    assert (await api.gql(ENVIRONMENT, {"id": owner.other_environment_id}, token=token)).codes == [
        "NOT_FOUND"
    ]
    invited = await Invitation.get(id=result.data["inviteMember"]["invitation"]["id"])
    assert invited.invited_by_id == owner.user_id  # type: ignore[attr-defined]
    assert (await events(owner.project_id))[0]["actor"] == f"key:{key_id}"


@pytest.mark.parametrize(
    ("role", "environments"),
    [
        ("OWNER", "own"),
        ("VIEWER", "all"),
        ("VIEWER", "other"),
        ("VIEWER", "own and other"),
        ("VIEWER", "missing"),
        ("VIEWER", "another project's"),
    ],
)
async def test_a_manage_key_cannot_grant_owner_nor_beyond_its_environment(
    api: Api, role: str, environments: str
) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    elsewhere = await new_tenant(api, environments=DEV_AND_PROD)
    _, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    environment_ids = {
        "own": [owner.environment_id],
        "all": [],
        "other": [owner.other_environment_id],
        "own and other": [owner.environment_id, owner.other_environment_id],
        "missing": [MISSING_ENVIRONMENT_ID],
        "another project's": [elsewhere.environment_id],
    }[environments]
    before = await state(owner.project_id)

    # when
    result = await invite(api, secret, owner.project_id, "k@example.com", role, environment_ids)

    # then
    assert_refused(result, "inviteMember", "FORBIDDEN")
    assert await state(owner.project_id) == before


async def test_a_manage_key_sees_only_the_members_who_reach_its_environment(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    here = await add_member(api, owner, Role.DEVELOPER, [owner.environment_id])
    there = await add_member(api, owner, Role.DEVELOPER, [owner.other_environment_id])
    _, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await api.gql(MEMBERS, {"projectId": owner.project_id}, token=secret)

    # then
    assert result.ok()["members"] == [
        member_view(owner, "OWNER", development(owner), all_environments=True),
        member_view(here, "DEVELOPER", development(owner), all_environments=False),
    ]
    assert there.member_id not in {m["id"] for m in result.data["members"]}


async def test_a_manage_key_changes_only_members_limited_to_its_environment(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    here = await add_member(api, owner, Role.ADMIN, [owner.environment_id])
    everywhere = await add_member(api, owner, Role.DEVELOPER)
    both_limited = await add_member(
        api, owner, Role.DEVELOPER, [owner.environment_id, owner.other_environment_id]
    )
    there = await add_member(api, owner, Role.VIEWER, [owner.other_environment_id])
    _, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    def demote(member: Joined) -> dict[str, Any]:
        return {"input": {"memberId": member.member_id, "role": "VIEWER"}}

    before = await state(owner.project_id)

    # when
    beyond_all = await api.gql(UPDATE, demote(everywhere), token=secret)
    beyond_both = await api.gql(REMOVE, {"memberId": both_limited.member_id}, token=secret)
    owner_change = await api.gql(REMOVE, {"memberId": owner.member_id}, token=secret)
    widen = await api.gql(
        UPDATE, {"input": {"memberId": here.member_id, "environmentIds": []}}, token=secret
    )
    out_of_reach = await api.gql(UPDATE, demote(there), token=secret)
    missing = await api.gql(
        UPDATE, {"input": {"memberId": MISSING_MEMBER_ID, "role": "VIEWER"}}, token=secret
    )
    unchanged = await state(owner.project_id)
    demoted = await api.gql(UPDATE, demote(here), token=secret)
    removed = await api.gql(REMOVE, {"memberId": here.member_id}, token=secret)

    # then
    assert_refused(beyond_all, "updateMember", "FORBIDDEN")
    assert_refused(beyond_both, "removeMember", "FORBIDDEN")
    assert_refused(owner_change, "removeMember", "FORBIDDEN")
    assert_refused(widen, "updateMember", "FORBIDDEN")
    assert_refused(out_of_reach, "updateMember", "NOT_FOUND")
    assert out_of_reach.body == missing.body
    assert unchanged == before
    assert demoted.ok()["updateMember"]["role"] == "VIEWER"
    assert removed.ok()["removeMember"]["id"] == here.member_id


# --- changes apply on the next request -----------------------------------------------------------


async def test_a_removed_member_is_refused_on_the_next_request(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await join(api, owner, "ADMIN")
    (await api.gql(PROJECT, {"id": owner.project_id}, token=member.token)).ok()

    # when
    (await api.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)).ok()
    project = await api.gql(PROJECT, {"id": owner.project_id}, token=member.token)
    environment = await api.gql(ENVIRONMENT, {"id": owner.environment_id}, token=member.token)

    # then
    assert project.codes == ["NOT_FOUND"]
    assert environment.codes == ["NOT_FOUND"]


async def test_a_narrowed_or_demoted_member_is_refused_on_the_next_request(api: Api) -> None:
    # given
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    member = await join(api, owner, "ADMIN")
    (await api.gql(ENVIRONMENT, {"id": owner.other_environment_id}, token=member.token)).ok()
    key_input = {
        "input": {"environmentId": owner.environment_id, "name": "n", "scopes": ["VIEW_ANALYTICS"]}
    }
    (await api.gql(CREATE_KEY, key_input, token=member.token)).ok()

    # when
    (
        await api.gql(
            UPDATE,
            {
                "input": {
                    "memberId": member.member_id,
                    "role": "VIEWER",
                    "environmentIds": [owner.environment_id],
                }
            },
            token=owner.token,
        )
    ).ok()
    hidden = await api.gql(ENVIRONMENT, {"id": owner.other_environment_id}, token=member.token)
    create_key = await api.gql(CREATE_KEY, key_input, token=member.token)
    members = await api.gql(MEMBERS, {"projectId": owner.project_id}, token=member.token)

    # then
    assert hidden.codes == ["NOT_FOUND"]
    assert create_key.codes == ["FORBIDDEN"]
    assert members.codes == ["FORBIDDEN"]


# --- closed sign-up admits invited emails --------------------------------------------------------

closed_signup = pytest.mark.parametrize("signup_policy", [SignupPolicy.CLOSED])


@closed_signup
async def test_with_closed_sign_up_an_invited_email_signs_up_and_accepts(api: Api) -> None:
    # given: the first user may always sign up
    owner = await new_tenant(api, "first@example.com", environments=DEV_AND_PROD)
    invited = (await invite(api, owner.token, owner.project_id, "Guest@Example.com")).ok()

    # when
    token = await api.sign_up("guest@example.com", PASSWORD)
    member = await accept(api, token, invited["inviteMember"]["token"])
    stranger = await api.gql(
        "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken } }",
        {"input": {"email": "stranger@example.com", "password": PASSWORD, "name": "S"}},
    )

    # then
    assert member.ok()["acceptInvitation"]["user"]["email"] == "guest@example.com"
    assert stranger.codes == ["FORBIDDEN"]


@closed_signup
async def test_with_closed_sign_up_an_expired_or_replaced_invitation_admits_nobody(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api, "first@example.com", environments=DEV_AND_PROD)
    (await invite(api, owner.token, owner.project_id, "late@example.com")).ok()
    clock.advance(SEVEN_DAYS + 1)

    # when
    result = await api.gql(
        "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken } }",
        {"input": {"email": "late@example.com", "password": PASSWORD, "name": "L"}},
    )

    # then
    assert result.codes == ["FORBIDDEN"]
