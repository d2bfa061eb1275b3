"""members: everyone with their role and environments, oldest first."""

from __future__ import annotations

from tests import factories
from tests.helpers import Api, new_tenant
from tests.member_helpers import (
    DEV_AND_PROD,
    ENVIRONMENT,
    both,
    join,
    member_view,
    members_of,
    production,
)
from tests.schema_client import SchemaApi

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
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    viewer = await join(schema, owner, "VIEWER")
    limited = await join(schema, owner, "VIEWER", [owner.environment_id])

    # when
    staging = await schema.create_environment(owner.token, owner.project_id, "Staging")
    found = {m["id"]: m["environments"] for m in await members_of(schema, owner)}

    # then
    assert [e["id"] for e in found[viewer.member_id]] == [
        owner.environment_id,
        owner.other_environment_id,
        staging,
    ]
    assert found[limited.member_id] == [{"id": owner.environment_id, "name": "Development"}]
    assert (await schema.gql(ENVIRONMENT, {"id": staging}, token=viewer.token)).ok()
