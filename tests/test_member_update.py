"""updateMember: role and environments, the activity it records, bad input."""

from __future__ import annotations

import pytest

from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, new_tenant
from tests.member_helpers import (
    CLIENT_IP,
    DEV_AND_PROD,
    MISSING_ENVIRONMENT_ID,
    UPDATE,
    add_member,
    assert_bad_input,
    both,
    events,
    join,
    member_view,
    members_of,
    production,
    state,
)
from tests.schema_client import SchemaApi

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


async def test_updating_records_member_updated_and_a_no_op_records_nothing(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await join(schema, owner, "VIEWER")
    count = len(await events(owner.project_id))

    # when
    (
        await schema.gql(
            UPDATE,
            {"input": {"memberId": member.member_id, "environmentIds": [owner.environment_id]}},
            token=owner.token,
        )
    ).ok()
    unchanged = await schema.gql(
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
    schema: SchemaApi, environments: str, field: str
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    elsewhere = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await add_member(schema, owner, Role.VIEWER)
    environment_ids = {
        "missing": [MISSING_ENVIRONMENT_ID],
        "another project's": [owner.environment_id, elsewhere.environment_id],
        "101": [owner.environment_id] * 101,
    }[environments]
    before = await state(owner.project_id)

    # when
    result = await schema.gql(
        UPDATE,
        {"input": {"memberId": member.member_id, "environmentIds": environment_ids}},
        token=owner.token,
    )

    # then
    assert_bad_input(result, field)
    assert await state(owner.project_id) == before
