"""A MANAGE_PROJECT key acts as an ADMIN of its own environment; member changes apply on the
next request.
"""

from __future__ import annotations

from typing import Any

import pytest

from keyplane.models import Invitation
from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, new_tenant
from tests.member_helpers import (
    CREATE_KEY,
    DEV_AND_PROD,
    ENVIRONMENT,
    MEMBERS,
    MISSING_ENVIRONMENT_ID,
    MISSING_MEMBER_ID,
    PASSWORD,
    PROJECT,
    REMOVE,
    UPDATE,
    Joined,
    accept,
    add_member,
    assert_refused,
    development,
    events,
    invite,
    join,
    member_view,
    state,
)
from tests.schema_client import SchemaApi

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
    schema: SchemaApi, role: str, environments: str
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    elsewhere = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    _, secret = await schema.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])
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
    result = await invite(schema, secret, owner.project_id, "k@example.com", role, environment_ids)

    # then
    assert_refused(result, "inviteMember", "FORBIDDEN")
    assert await state(owner.project_id) == before


async def test_a_manage_key_sees_only_the_members_who_reach_its_environment(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    here = await add_member(schema, owner, Role.DEVELOPER, [owner.environment_id])
    there = await add_member(schema, owner, Role.DEVELOPER, [owner.other_environment_id])
    _, secret = await schema.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await schema.gql(MEMBERS, {"projectId": owner.project_id}, token=secret)

    # then
    assert result.ok()["members"] == [
        member_view(owner, "OWNER", development(owner), all_environments=True),
        member_view(here, "DEVELOPER", development(owner), all_environments=False),
    ]
    assert there.member_id not in {m["id"] for m in result.data["members"]}


async def test_a_manage_key_changes_only_members_limited_to_its_environment(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    here = await add_member(schema, owner, Role.ADMIN, [owner.environment_id])
    everywhere = await add_member(schema, owner, Role.DEVELOPER)
    both_limited = await add_member(
        schema, owner, Role.DEVELOPER, [owner.environment_id, owner.other_environment_id]
    )
    there = await add_member(schema, owner, Role.VIEWER, [owner.other_environment_id])
    _, secret = await schema.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    def demote(member: Joined) -> dict[str, Any]:
        return {"input": {"memberId": member.member_id, "role": "VIEWER"}}

    before = await state(owner.project_id)

    # when
    beyond_all = await schema.gql(UPDATE, demote(everywhere), token=secret)
    beyond_both = await schema.gql(REMOVE, {"memberId": both_limited.member_id}, token=secret)
    owner_change = await schema.gql(REMOVE, {"memberId": owner.member_id}, token=secret)
    widen = await schema.gql(
        UPDATE, {"input": {"memberId": here.member_id, "environmentIds": []}}, token=secret
    )
    out_of_reach = await schema.gql(UPDATE, demote(there), token=secret)
    missing = await schema.gql(
        UPDATE, {"input": {"memberId": MISSING_MEMBER_ID, "role": "VIEWER"}}, token=secret
    )
    unchanged = await state(owner.project_id)
    demoted = await schema.gql(UPDATE, demote(here), token=secret)
    removed = await schema.gql(REMOVE, {"memberId": here.member_id}, token=secret)

    # then
    assert_refused(beyond_all, "updateMember", "FORBIDDEN")
    assert_refused(beyond_both, "removeMember", "FORBIDDEN")
    assert_refused(owner_change, "removeMember", "FORBIDDEN")
    assert_refused(widen, "updateMember", "FORBIDDEN")
    assert_refused(out_of_reach, "updateMember", "NOT_FOUND")
    assert out_of_reach == missing
    assert unchanged == before
    assert demoted.ok()["updateMember"]["role"] == "VIEWER"
    assert removed.ok()["removeMember"]["id"] == here.member_id


# --- changes apply on the next request -----------------------------------------------------------


async def test_a_removed_member_is_refused_on_the_next_request(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await join(schema, owner, "ADMIN")
    (await schema.gql(PROJECT, {"id": owner.project_id}, token=member.token)).ok()

    # when
    (await schema.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)).ok()
    project = await schema.gql(PROJECT, {"id": owner.project_id}, token=member.token)
    environment = await schema.gql(ENVIRONMENT, {"id": owner.environment_id}, token=member.token)

    # then
    assert project.codes == ["NOT_FOUND"]
    assert environment.codes == ["NOT_FOUND"]


async def test_a_narrowed_or_demoted_member_is_refused_on_the_next_request(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await join(schema, owner, "ADMIN")
    (await schema.gql(ENVIRONMENT, {"id": owner.other_environment_id}, token=member.token)).ok()
    key_input = {
        "input": {"environmentId": owner.environment_id, "name": "n", "scopes": ["VIEW_ANALYTICS"]}
    }
    (await schema.gql(CREATE_KEY, key_input, token=member.token)).ok()

    # when
    (
        await schema.gql(
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
    hidden = await schema.gql(ENVIRONMENT, {"id": owner.other_environment_id}, token=member.token)
    create_key = await schema.gql(CREATE_KEY, key_input, token=member.token)
    members = await schema.gql(MEMBERS, {"projectId": owner.project_id}, token=member.token)

    # then
    assert hidden.codes == ["NOT_FOUND"]
    assert create_key.codes == ["FORBIDDEN"]
    assert members.codes == ["FORBIDDEN"]
