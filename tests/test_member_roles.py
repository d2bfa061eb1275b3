"""The rules of roles: a project keeps an OWNER of every environment, and nobody grants above
their own role.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from keyplane.models import Member
from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, new_tenant
from tests.member_helpers import (
    DEV_AND_PROD,
    REMOVE,
    UPDATE,
    add_member,
    assert_refused,
    events,
    invite,
    join,
    state,
)
from tests.schema_client import SchemaApi

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


async def test_with_a_second_owner_one_may_step_down_but_not_both(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    second = await join(schema, owner, "OWNER")

    # when
    first_steps_down = await schema.gql(
        UPDATE, {"input": {"memberId": owner.member_id, "role": "ADMIN"}}, token=owner.token
    )
    second_leaves = await schema.gql(REMOVE, {"memberId": second.member_id}, token=second.token)

    # then
    assert first_steps_down.ok()["updateMember"]["role"] == "ADMIN"
    assert_refused(second_leaves, "removeMember", "CONFLICT")


async def test_two_owners_leaving_at_once_leave_one_owner(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    second = await join(schema, owner, "OWNER")

    # when
    results = await asyncio.gather(
        schema.gql(REMOVE, {"memberId": owner.member_id}, token=owner.token),
        schema.gql(REMOVE, {"memberId": second.member_id}, token=second.token),
    )

    # then
    assert sorted(str(r.codes[0]) if r.errors else "OK" for r in results) == ["CONFLICT", "OK"]
    assert await Member.filter(project_id=owner.project_id, role=Role.OWNER).count() == 1


# --- nobody grants above their own role ----------------------------------------------------------


async def test_an_admin_cannot_invite_or_promote_an_owner(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    admin = await join(schema, owner, "ADMIN")
    developer = await add_member(schema, owner, Role.DEVELOPER)
    before = await state(owner.project_id)

    # when
    invited = await invite(schema, admin.token, owner.project_id, "boss@example.com", "OWNER")
    promoted = await schema.gql(
        UPDATE, {"input": {"memberId": developer.member_id, "role": "OWNER"}}, token=admin.token
    )
    self_promoted = await schema.gql(
        UPDATE, {"input": {"memberId": admin.member_id, "role": "OWNER"}}, token=admin.token
    )

    # then
    assert_refused(invited, "inviteMember", "FORBIDDEN")
    assert_refused(promoted, "updateMember", "FORBIDDEN")
    assert_refused(self_promoted, "updateMember", "FORBIDDEN")
    assert await state(owner.project_id) == before


async def test_an_admin_cannot_change_or_remove_an_owner(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    second_owner = await add_member(schema, owner, Role.OWNER)
    admin = await join(schema, owner, "ADMIN")
    before = await state(owner.project_id)

    # when
    demoted = await schema.gql(
        UPDATE, {"input": {"memberId": second_owner.member_id, "role": "VIEWER"}}, token=admin.token
    )
    removed = await schema.gql(REMOVE, {"memberId": second_owner.member_id}, token=admin.token)

    # then
    assert_refused(demoted, "updateMember", "FORBIDDEN")
    assert_refused(removed, "removeMember", "FORBIDDEN")
    assert await state(owner.project_id) == before


async def test_an_admin_manages_admins_and_below(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    admin = await join(schema, owner, "ADMIN")
    other_admin = await add_member(schema, owner, Role.ADMIN)

    # when
    invited = await invite(schema, admin.token, owner.project_id, "peer@example.com", "ADMIN")
    demoted = await schema.gql(
        UPDATE, {"input": {"memberId": other_admin.member_id, "role": "VIEWER"}}, token=admin.token
    )

    # then
    assert invited.ok()["inviteMember"]["invitation"]["role"] == "ADMIN"
    assert demoted.ok()["updateMember"]["role"] == "VIEWER"


async def test_an_oauth_token_manages_members_with_its_users_role(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    admin = await join(schema, owner, "ADMIN")
    token = schema.oauth.token(sub="admin-at-issuer", email=admin.email, scope="project:manage")

    # when
    as_admin = await invite(schema, token, owner.project_id, "x@example.com", "ADMIN")
    above = await invite(schema, token, owner.project_id, "y@example.com", "OWNER")

    # then
    assert as_admin.ok()["inviteMember"]["invitation"]["role"] == "ADMIN"
    assert_refused(above, "inviteMember", "FORBIDDEN")
    assert (await events(owner.project_id))[-1]["actor"] == (
        f"oauth:integration-client for user:{admin.user_id}"
    )


async def test_a_lower_role_cannot_replace_an_invitation_issued_by_a_higher_one(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    admin = await join(schema, owner, "ADMIN")
    (await invite(schema, owner.token, owner.project_id, "heir@example.com", "OWNER")).ok()
    before = await state(owner.project_id)

    # when
    result = await invite(schema, admin.token, owner.project_id, "heir@example.com", "VIEWER")

    # then
    assert_refused(result, "inviteMember", "CONFLICT")
    assert await state(owner.project_id) == before
