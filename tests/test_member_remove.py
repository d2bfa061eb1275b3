"""removeMember: what the membership was, twice, and leaving a project oneself."""

from __future__ import annotations

from keyplane.models import MemberEnvironment
from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, new_tenant
from tests.member_helpers import (
    CLIENT_IP,
    DEV_AND_PROD,
    PROJECT,
    REMOVE,
    add_member,
    assert_refused,
    development,
    events,
    join,
    member_view,
    members_of,
)
from tests.schema_client import SchemaApi

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


async def test_removing_twice_answers_not_found(schema: SchemaApi) -> None:
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await add_member(schema, owner, Role.VIEWER)
    (await schema.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)).ok()

    again = await schema.gql(REMOVE, {"memberId": member.member_id}, token=owner.token)

    assert_refused(again, "removeMember", "NOT_FOUND")


async def test_a_member_may_leave_a_project_it_manages(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    admin = await join(schema, owner, "ADMIN")

    # when
    result = await schema.gql(REMOVE, {"memberId": admin.member_id}, token=admin.token)

    # then
    assert result.ok()["removeMember"]["id"] == admin.member_id
    assert (await schema.gql(PROJECT, {"id": owner.project_id}, token=admin.token)).codes == [
        "NOT_FOUND"
    ]
