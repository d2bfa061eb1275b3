"""An environment's key policy: keys created, updated or rotated there must keep it
(BAD_USER_INPUT naming the rule), and keys issued before it are listed, not cut off."""

from __future__ import annotations

from typing import Any

import pytest

from keyplane.permissions.scopes import Role
from tests.check_helpers import create_key, update_key
from tests.factories import add_member
from tests.helpers import Api, Tenant, in_future, new_tenant
from tests.template_helpers import bad_input

UPDATE_POLICY = """
mutation($input: UpdateEnvironmentPolicyInput!) {
  updateEnvironmentPolicy(input: $input) { requireExpiry maxLifetimeDays allowedScopes }
}
"""

READ_POLICY = """
query($id: ID!) {
  environment(id: $id) {
    policy { requireExpiry maxLifetimeDays allowedScopes }
    keysOutsidePolicy { id name }
  }
}
"""

ROTATE = """
mutation($input: RotateApiKeyInput!) { rotateApiKey(input: $input) { apiKey { id } } }
"""

NO_POLICY: dict[str, Any] = {"requireExpiry": False, "maxLifetimeDays": None, "allowedScopes": []}


async def set_policy(api: Api, token: str, environment_id: str, **rules: Any) -> Any:
    return await api.gql(
        UPDATE_POLICY, {"input": {"environmentId": environment_id} | rules}, token=token
    )


async def read(api: Api, tenant: Tenant) -> Any:
    result = await api.gql(READ_POLICY, {"id": tenant.environment_id}, token=tenant.token)
    return result.ok()["environment"]


async def named_key(api: Api, tenant: Tenant, name: str, **input: Any) -> str:
    result = await api.gql(
        "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } } }",
        {"input": {"environmentId": tenant.environment_id, "name": name} | input},
        token=tenant.token,
    )
    return str(result.ok()["createApiKey"]["apiKey"]["id"])


async def test_an_environment_has_no_policy_until_one_is_set(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    before = await read(api, tenant)

    # when
    updated = await set_policy(
        api,
        tenant.token,
        tenant.environment_id,
        requireExpiry=True,
        maxLifetimeDays=90,
        allowedScopes=["VIEW_ANALYTICS", "GENERATE_DOCUMENTS"],
    )

    # then
    policy = {
        "requireExpiry": True,
        "maxLifetimeDays": 90,
        "allowedScopes": ["GENERATE_DOCUMENTS", "VIEW_ANALYTICS"],
    }
    assert before == {"policy": NO_POLICY, "keysOutsidePolicy": []}
    assert updated.ok() == {"updateEnvironmentPolicy": policy}
    assert (await read(api, tenant))["policy"] == policy


async def test_require_expiry_refuses_a_key_without_one(api: Api) -> None:
    tenant = await new_tenant(api)
    (await set_policy(api, tenant.token, tenant.environment_id, requireExpiry=True)).ok()

    without = await create_key(api, tenant.token, tenant.environment_id)
    with_expiry = await create_key(api, tenant.token, tenant.environment_id, expiresAt=in_future())

    assert bad_input(without) == (
        "expiresAt",
        "This environment's policy requires an expiry (requireExpiry).",
    )
    assert with_expiry.ok()["createApiKey"]["secret"]


async def test_max_lifetime_refuses_a_longer_or_endless_key(api: Api) -> None:
    tenant = await new_tenant(api)
    (await set_policy(api, tenant.token, tenant.environment_id, maxLifetimeDays=30)).ok()

    too_long = await create_key(api, tenant.token, tenant.environment_id, expiresAt=in_future(31))
    endless = await create_key(api, tenant.token, tenant.environment_id)
    within = await create_key(api, tenant.token, tenant.environment_id, expiresAt=in_future(29))

    assert bad_input(too_long) == (
        "expiresAt",
        "This environment's policy allows keys to live at most 30 days (maxLifetimeDays).",
    )
    assert bad_input(endless) == (
        "expiresAt",
        "This environment's policy requires an expiry at most 30 days away (maxLifetimeDays).",
    )
    assert within.ok()["createApiKey"]["secret"]


async def test_allowed_scopes_refuse_other_scopes_on_create_and_update(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    key_id = await named_key(api, tenant, "reader", scopes=["VIEW_ANALYTICS"])
    policy = await set_policy(
        api, tenant.token, tenant.environment_id, allowedScopes=["VIEW_ANALYTICS"]
    )
    policy.ok()

    # when
    created = await create_key(
        api, tenant.token, tenant.environment_id, ["VIEW_ANALYTICS", "MANAGE_PROJECT"]
    )
    widened = await update_key(api, tenant.token, key_id, scopes=["MANAGE_PROJECT"])
    renamed = await update_key(api, tenant.token, key_id, name="still a reader")

    # then
    message = "This environment's policy does not allow the scopes MANAGE_PROJECT (allowedScopes)."
    assert bad_input(created) == ("scopes", message)
    assert bad_input(widened) == ("scopes", message)
    assert renamed.ok()["updateApiKey"]["id"] == key_id


async def test_rotating_a_key_outside_the_policy_is_refused(api: Api) -> None:
    tenant = await new_tenant(api)
    key_id = await named_key(api, tenant, "old", scopes=["VIEW_ANALYTICS"])
    (await set_policy(api, tenant.token, tenant.environment_id, requireExpiry=True)).ok()

    result = await api.gql(ROTATE, {"input": {"id": key_id}}, token=tenant.token)

    assert bad_input(result) == (
        "expiresAt",
        "This environment's policy requires an expiry (requireExpiry).",
    )


async def test_keys_issued_before_a_policy_are_listed_as_outside_it(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    endless = await named_key(api, tenant, "endless", scopes=["VIEW_ANALYTICS"])
    await named_key(api, tenant, "short", scopes=["VIEW_ANALYTICS"], expiresAt=in_future(5))
    wide = await named_key(api, tenant, "wide", scopes=["MANAGE_PROJECT"], expiresAt=in_future(5))
    revoked = await named_key(api, tenant, "revoked", scopes=["VIEW_ANALYTICS"])
    await api.gql(
        "mutation($id: ID!) { revokeApiKey(id: $id) { id } }", {"id": revoked}, token=tenant.token
    )

    # when
    await set_policy(
        api,
        tenant.token,
        tenant.environment_id,
        requireExpiry=True,
        allowedScopes=["VIEW_ANALYTICS"],
    )
    outside = (await read(api, tenant))["keysOutsidePolicy"]

    # then: newest first; the compliant and the revoked key are not listed
    assert outside == [{"id": wide, "name": "wide"}, {"id": endless, "name": "endless"}]


@pytest.mark.parametrize(
    ("rules", "field", "message"),
    [
        ({"maxLifetimeDays": 0}, "maxLifetimeDays", "maxLifetimeDays must be between 1 and 3650."),
        (
            {"allowedScopes": ["EVERYTHING"]},
            "allowedScopes",
            "Unknown scope EVERYTHING: Query.scopeCatalog lists them.",
        ),
    ],
    ids=["lifetime of zero days", "unknown scope"],
)
async def test_a_bad_policy_is_refused_naming_the_field(
    api: Api, rules: dict[str, Any], field: str, message: str
) -> None:
    tenant = await new_tenant(api)

    result = await set_policy(api, tenant.token, tenant.environment_id, **rules)

    assert bad_input(result) == (field, message)


async def test_only_manage_project_there_may_set_a_policy(api: Api) -> None:
    # given: a MANAGE_PROJECT key manages keys in its own environment, and so its policy
    tenant = await new_tenant(api)
    developer = await add_member(api, tenant.project_id, Role.DEVELOPER)
    stranger = await new_tenant(api)
    _, reader_key = await api.create_key(tenant.token, tenant.environment_id, ["VIEW_ANALYTICS"])
    _, manage_key = await api.create_key(tenant.token, tenant.environment_id, ["MANAGE_PROJECT"])
    _, elsewhere_key = await api.create_key(
        stranger.token, stranger.environment_id, ["MANAGE_PROJECT"]
    )

    # when
    by_developer = await set_policy(api, developer, tenant.environment_id, requireExpiry=True)
    by_reader_key = await set_policy(api, reader_key, tenant.environment_id, requireExpiry=True)
    by_stranger = await set_policy(api, stranger.token, tenant.environment_id, requireExpiry=True)
    by_elsewhere_key = await set_policy(
        api, elsewhere_key, tenant.environment_id, requireExpiry=True
    )
    by_nobody = await api.gql(
        UPDATE_POLICY, {"input": {"environmentId": tenant.environment_id, "requireExpiry": True}}
    )
    unchanged = (await read(api, tenant))["policy"]
    by_key = await set_policy(api, manage_key, tenant.environment_id, requireExpiry=True)

    # then
    for refused in (by_developer, by_reader_key):
        assert refused.codes == ["FORBIDDEN"]
        assert refused.errors[0]["extensions"]["requiredScopes"] == ["MANAGE_PROJECT"]
    assert by_stranger.codes == ["NOT_FOUND"]
    assert by_elsewhere_key.codes == ["NOT_FOUND"]
    assert by_nobody.codes == ["UNAUTHENTICATED"]
    assert unchanged == NO_POLICY
    assert by_key.ok()["updateEnvironmentPolicy"] == NO_POLICY | {"requireExpiry": True}
