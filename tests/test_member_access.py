"""Who may call each member operation: no credentials, callers without MANAGE_PROJECT everywhere,
project-wide managers and MANAGE_PROJECT keys, and another project's objects (answered exactly
like missing ones).
"""

from __future__ import annotations

import pytest

from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, Client, Operation, Tenant, each_operation, new_tenant
from tests.member_helpers import (
    DEV_AND_PROD,
    INVITE,
    MEMBERS,
    MISSING_ENVIRONMENT_ID,
    MISSING_MEMBER_ID,
    MISSING_PROJECT_ID,
    REMOVE,
    UPDATE,
    Joined,
    add_member,
    assert_refused,
    state,
)
from tests.schema_client import SchemaApi

# --- what every managing operation does alike ----------------------------------------------------


# Each operation's variables: (tenant, id of a DEVELOPER limited to the tenant's Development
# environment) -> variables.
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
every_operation = each_operation(OPERATIONS)


async def credential(api: Client, tenant: Tenant, kind: str) -> str:
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


async def _a_member_and_a_caller(schema: SchemaApi, caller: str) -> tuple[Tenant, Joined, str]:
    """An owner of Development and Production, a DEVELOPER limited to Development (the target)
    and the `credential` of the caller."""
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    target = await add_member(schema, owner, Role.DEVELOPER, [owner.environment_id])
    return owner, target, await credential(schema, owner, caller)


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
    schema: SchemaApi, operation: Operation, caller: str
) -> None:
    # given
    owner, target, token = await _a_member_and_a_caller(schema, caller)
    before = await state(owner.project_id)

    # when
    result = await schema.gql(
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
    schema: SchemaApi, operation: Operation, caller: str
) -> None:
    # given
    owner, target, token = await _a_member_and_a_caller(schema, caller)

    # when
    result = await schema.gql(
        operation.document, operation.variables(owner, target.member_id), token=token
    )

    # then
    assert result.ok()[operation.field] is not None


@every_operation
@pytest.mark.parametrize("caller", ["owner", "key:MANAGE_PROJECT"])
async def test_every_member_operation_on_another_project_answers_like_a_missing_id(
    schema: SchemaApi, operation: Operation, caller: str
) -> None:
    # given
    intruder = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    token = await credential(schema, intruder, caller)
    victim = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    target = await add_member(schema, victim, Role.DEVELOPER, [victim.environment_id])
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
    elsewhere = await schema.gql(
        operation.document, operation.variables(victim, target.member_id), token=token
    )
    nowhere = await schema.gql(
        operation.document, operation.variables(missing, MISSING_MEMBER_ID), token=token
    )

    # then
    assert_refused(elsewhere, operation.field, "NOT_FOUND")
    assert elsewhere == nowhere
    assert await state(victim.project_id) == before
