"""Membership governs keys (issue 15, item 4): a key never does more than its creator may now do.

A key's effective scopes are its own scopes intersected with what its creator's role grants,
now, in the key's environment. Demoting the creator or withdrawing that environment narrows the
key on the very next request, on every worker; removing the creator revokes every key they
made in the project, unless the remover takes the keys over with keepApiKeys.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from keyplane.models import ActivityEvent, ApiKey, Member
from keyplane.models.activity import ActivityKind
from tests.helpers import Api, Result, Tenant, new_tenant
from tests.member_helpers import DEV_AND_PROD, REMOVE, UPDATE, Joined, join, state
from tests.serve_process import Servers, any_worker_api, needs_redis

ALL_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_PROJECT", "MANAGE_TEMPLATES", "VIEW_ANALYTICS"]
VIEWER = "{ viewer { kind scopes user { id } apiKey { id scopes } } }"
CREATE_KEY = """
mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id } } }
"""
KEEPING = """
mutation Remove($memberId: ID!, $keep: Boolean) {
  removeMember(memberId: $memberId, keepApiKeys: $keep) { id }
}
"""
REFUSED_BODY = {
    "data": None,
    "errors": [
        {"message": "Invalid or expired credentials.", "extensions": {"code": "UNAUTHENTICATED"}}
    ],
}
KEY_EVENTS = [ActivityKind.KEY_REVOKED, ActivityKind.KEY_UPDATED]


def new_key_input(environment_id: str, scopes: list[str] | None = None) -> dict[str, Any]:
    return {
        "input": {"environmentId": environment_id, "name": "minted", "scopes": scopes or ALL_SCOPES}
    }


async def viewer(api: Api, secret: str) -> dict[str, Any]:
    found: dict[str, Any] = (await api.gql(VIEWER, token=secret)).ok()["viewer"]
    return found


async def change_member(
    api: Api, owner: Tenant, member: Joined, role: str, environment_ids: list[str]
) -> None:
    variables = {
        "input": {"memberId": member.member_id, "role": role, "environmentIds": environment_ids}
    }
    (await api.gql(UPDATE, variables, token=owner.token)).ok()


async def remove(api: Api, token: str, member: Joined, *, keep: bool | None = None) -> Result:
    return await api.gql(KEEPING, {"memberId": member.member_id, "keep": keep}, token=token)


async def key_events(project_id: str) -> list[tuple[str, str | None, str, str]]:
    rows = (
        await ActivityEvent.filter(project_id=project_id, kind__in=KEY_EVENTS)
        .order_by("at", "id")
        .values_list("kind", "environment_id", "actor", "target")
    )
    return [(str(kind), env, actor, target) for kind, env, actor, target in rows]


async def an_admin_with_an_all_scope_key(api: Api) -> tuple[Tenant, Joined, str, str]:
    """An owner's project, an ADMIN of every environment, and a key that ADMIN made with all
    four scopes in Development, already used (so every cache holds it)."""
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")
    key_id, secret = await api.create_key(admin.token, owner.environment_id, ALL_SCOPES)
    assert (await viewer(api, secret))["scopes"] == ALL_SCOPES
    return owner, admin, key_id, secret


# --- removal -------------------------------------------------------------------------------------


async def test_a_removed_admins_all_scope_key_is_refused_on_the_next_request(api: Api) -> None:
    # given
    owner, admin, _, secret = await an_admin_with_an_all_scope_key(api)

    # when
    (await api.gql(REMOVE, {"memberId": admin.member_id}, token=owner.token)).ok()
    minting = await api.gql(CREATE_KEY, new_key_input(owner.environment_id), token=secret)

    # then
    assert (minting.status, minting.body) == (401, REFUSED_BODY)


async def test_removal_revokes_only_the_members_live_keys_in_that_project_each_with_its_reason(
    api: Api,
) -> None:
    # given: the admin's two live keys and one already revoked, a key of the owner, and a key
    # the admin made in a project of their own
    owner, admin, first_id, _ = await an_admin_with_an_all_scope_key(api)
    second_id, _ = await api.create_key(admin.token, owner.other_environment_id, ["VIEW_ANALYTICS"])
    revoked_id, _ = await api.create_key(admin.token, owner.environment_id)
    revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
    (await api.gql(revoke, {"id": revoked_id}, token=admin.token)).ok()
    owners_id, owners_secret = await api.create_key(owner.token, owner.environment_id)
    elsewhere = await api.create_project(admin.token)
    elsewhere_env = await api.create_environment(admin.token, elsewhere)
    elsewhere_id, elsewhere_secret = await api.create_key(admin.token, elsewhere_env)
    before = await key_events(owner.project_id)

    # when
    (await api.gql(REMOVE, {"memberId": admin.member_id}, token=owner.token)).ok()

    # then
    revoked = cast(
        "list[str]", await ApiKey.filter(revoked_at__isnull=False).values_list("id", flat=True)
    )
    assert sorted(revoked) == sorted([first_id, second_id, revoked_id])
    assert (await api.gql(VIEWER, token=owners_secret)).status == 200
    assert (await api.gql(VIEWER, token=elsewhere_secret)).status == 200
    reason = f": its creator was removed (member:{admin.member_id} user:{admin.user_id})"
    logged = (await key_events(owner.project_id))[len(before) :]
    assert sorted(logged) == sorted(
        [
            (
                "KEY_REVOKED",
                owner.environment_id,
                f"user:{owner.user_id}",
                f"key:{first_id} ({await prefix(first_id)}) server{reason}",
            ),
            (
                "KEY_REVOKED",
                owner.other_environment_id,
                f"user:{owner.user_id}",
                f"key:{second_id} ({await prefix(second_id)}) server{reason}",
            ),
        ]
    )
    assert {owners_id, elsewhere_id}.isdisjoint(revoked)


async def prefix(key_id: str) -> str:
    return (await ApiKey.get(id=key_id)).prefix


# --- demotion and withdrawn environments ---------------------------------------------------------


async def test_a_demoted_members_key_loses_the_scopes_on_the_next_request(api: Api) -> None:
    # given
    owner, admin, key_id, secret = await an_admin_with_an_all_scope_key(api)

    # when
    await change_member(api, owner, admin, "VIEWER", [])
    seen = await viewer(api, secret)
    minting = await api.gql(CREATE_KEY, new_key_input(owner.environment_id), token=secret)
    inviting = await api.gql(
        "mutation($input: InviteMemberInput!) { inviteMember(input: $input) { token } }",
        {
            "input": {
                "projectId": owner.project_id,
                "email": admin.email.replace("@", "+again@"),
                "role": "ADMIN",
                "environmentIds": [owner.environment_id],
            }
        },
        token=secret,
    )

    # then: the key keeps its own scopes, but acts with what a VIEWER holds
    assert seen == {
        "kind": "API_KEY",
        "scopes": ["VIEW_ANALYTICS"],
        "user": {"id": admin.user_id},
        "apiKey": {"id": key_id, "scopes": ALL_SCOPES},
    }
    assert (minting.status, minting.data, minting.codes) == (
        200,
        {"createApiKey": None},
        ["FORBIDDEN"],
    )
    assert (inviting.data, inviting.codes) == ({"inviteMember": None}, ["FORBIDDEN"])


async def test_withdrawn_environment_access_leaves_the_key_authenticated_with_no_scope(
    api: Api,
) -> None:
    # given: the admin's key lives in Development
    owner, admin, _, secret = await an_admin_with_an_all_scope_key(api)

    # when: the admin keeps their role, but only in Production
    await change_member(api, owner, admin, "ADMIN", [owner.other_environment_id])
    seen = await viewer(api, secret)
    minting = await api.gql(CREATE_KEY, new_key_input(owner.environment_id), token=secret)
    reading = await api.gql(
        "query($id: ID!) { activity(environmentId: $id) { edges { node { id } } } }",
        {"id": owner.environment_id},
        token=secret,
    )

    # then
    assert seen["scopes"] == []
    assert seen["kind"] == "API_KEY"
    assert minting.codes == ["FORBIDDEN"]
    assert (reading.data, reading.codes) == ({"activity": None}, ["FORBIDDEN"])


async def test_giving_the_environment_back_restores_the_key_on_the_next_request(api: Api) -> None:
    # given: a narrowed admin, whose key has been refused since
    owner, admin, _, secret = await an_admin_with_an_all_scope_key(api)
    await change_member(api, owner, admin, "DEVELOPER", [owner.other_environment_id])
    assert (await viewer(api, secret))["scopes"] == []

    # when
    await change_member(api, owner, admin, "DEVELOPER", [])

    # then
    assert (await viewer(api, secret))["scopes"] == [
        "GENERATE_DOCUMENTS",
        "MANAGE_TEMPLATES",
        "VIEW_ANALYTICS",
    ]


# --- keepApiKeys ---------------------------------------------------------------------------------


async def test_keep_api_keys_hands_the_keys_to_the_caller(api: Api) -> None:
    # given
    owner, admin, key_id, secret = await an_admin_with_an_all_scope_key(api)
    admin_prefix = await prefix(key_id)

    # when
    removed = await remove(api, owner.token, admin, keep=True)

    # then: the key works on, for the owner, with the owner's scopes
    assert removed.ok() == {"removeMember": {"id": admin.member_id}}
    assert await viewer(api, secret) == {
        "kind": "API_KEY",
        "scopes": ALL_SCOPES,
        "user": {"id": owner.user_id},
        "apiKey": {"id": key_id, "scopes": ALL_SCOPES},
    }
    assert await key_events(owner.project_id) == [
        (
            "KEY_UPDATED",
            owner.environment_id,
            f"user:{owner.user_id}",
            f"key:{key_id} ({admin_prefix}) server: handed to user:{owner.user_id}, its creator "
            f"was removed (member:{admin.member_id} user:{admin.user_id})",
        ),
    ]


async def test_keep_api_keys_is_forbidden_without_manage_project_where_a_key_lives(
    api: Api,
) -> None:
    # given: an admin made a key in Production, then was limited to Development; a
    # MANAGE_PROJECT key of Development manages members limited to Development only
    owner = await new_tenant(api, environments=DEV_AND_PROD)
    admin = await join(api, owner, "ADMIN")
    key_id, _ = await api.create_key(admin.token, owner.other_environment_id)
    await change_member(api, owner, admin, "ADMIN", [owner.environment_id])
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    before = await state(owner.project_id)

    # when
    refused = await remove(api, manager, admin, keep=True)

    # then
    assert (refused.data, refused.codes) == ({"removeMember": None}, ["FORBIDDEN"])
    assert refused.errors[0]["extensions"]["requiredScopes"] == ["MANAGE_PROJECT"]
    assert await state(owner.project_id) == before
    kept = await ApiKey.get(id=key_id)
    assert (kept.revoked_at, kept.created_by_id) == (None, admin.user_id)  # type: ignore[attr-defined]
    assert await Member.exists(id=admin.member_id)


async def test_keep_api_keys_cannot_hand_the_keys_to_the_member_leaving(api: Api) -> None:
    # given
    owner, admin, key_id, _ = await an_admin_with_an_all_scope_key(api)
    before = await state(owner.project_id)

    # when
    refused = await remove(api, admin.token, admin, keep=True)

    # then
    assert [e["extensions"] for e in refused.errors] == [
        {"code": "BAD_USER_INPUT", "field": "keepApiKeys"}
    ]
    assert await state(owner.project_id) == before
    assert (await ApiKey.get(id=key_id)).revoked_at is None


async def test_keep_api_keys_false_or_null_revokes_as_by_default(api: Api) -> None:
    # given
    owner, admin, _, secret = await an_admin_with_an_all_scope_key(api)

    # when
    removed = await remove(api, owner.token, admin, keep=None)

    # then
    assert removed.ok() == {"removeMember": {"id": admin.member_id}}
    assert (await api.gql(VIEWER, token=secret)).status == 401


# --- on every worker -----------------------------------------------------------------------------


@pytest.mark.slow
@needs_redis
async def test_a_demotion_narrows_the_key_on_every_worker_on_the_next_request(
    sqlite_servers: Servers, tmp_path: Path
) -> None:
    server = sqlite_servers.start()
    async with any_worker_api(server, tmp_path, seconds=10) as api:
        # given: an ADMIN's all-scope key that both workers have served (and kept)
        owner = await api.sign_up()
        project_id = await api.create_project(owner)
        environment_id = await api.create_environment(owner, project_id)
        invited = await api.gql(
            "mutation($input: InviteMemberInput!) { inviteMember(input: $input) { token } }",
            {
                "input": {
                    "projectId": project_id,
                    "email": f"admin-{tmp_path.name}@example.com",
                    "role": "ADMIN",
                    "environmentIds": [],
                }
            },
            token=owner,
        )
        admin = await api.sign_up(f"admin-{tmp_path.name}@example.com")
        accepted = await api.gql(
            "mutation($t: String!) { acceptInvitation(token: $t) { id } }",
            {"t": invited.ok()["inviteMember"]["token"]},
            token=admin,
        )
        member_id = accepted.ok()["acceptInvitation"]["id"]
        _, secret = await api.create_key(admin, environment_id, ALL_SCOPES)
        scoped = "{ viewer { scopes } }"
        before = await asyncio.gather(*(api.gql(scoped, token=secret) for _ in range(20)))
        assert {str(r.ok()["viewer"]["scopes"]) for r in before} == {str(ALL_SCOPES)}

        # when
        demote = {"input": {"memberId": member_id, "role": "VIEWER"}}
        (await api.gql(UPDATE, demote, token=owner)).ok()
        after = await asyncio.gather(*(api.gql(scoped, token=secret) for _ in range(20)))

        # then
        assert {str(r.ok()["viewer"]["scopes"]) for r in after} == {"['VIEW_ANALYTICS']"}
