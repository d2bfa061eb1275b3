"""inviteMember: the invitation, its token (stored only as its hash), replacement, bad input and
the activity it records.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from unittest.mock import ANY

import pytest

from keyplane.models import Invitation
from tests import factories
from tests.helpers import Api, Clock, new_tenant
from tests.member_helpers import (
    CLIENT_IP,
    DEV_AND_PROD,
    MISSING_ENVIRONMENT_ID,
    PASSWORD,
    SEVEN_DAYS,
    TOKEN_RE,
    accept,
    assert_bad_input,
    assert_refused,
    events,
    instant,
    invite,
    join,
    state,
)
from tests.schema_client import SchemaApi

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


async def test_an_invitation_without_environments_grants_all_of_them(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)

    # when
    result = await invite(schema, owner.token, owner.project_id, "all@example.com", "VIEWER", [])

    # then
    invitation = result.ok()["inviteMember"]["invitation"]
    assert invitation["allEnvironments"] is True
    assert invitation["environments"] == [
        {"id": owner.environment_id, "name": "Development"},
        {"id": owner.other_environment_id, "name": "Production"},
    ]


async def test_the_invitation_token_is_stored_only_as_its_hash(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)

    # when
    payload = (await invite(schema, owner.token, owner.project_id, "h@example.com")).ok()
    token = payload["inviteMember"]["token"]
    stored = await Invitation.get(id=payload["inviteMember"]["invitation"]["id"])

    # then
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(await Invitation.filter(id=stored.id).values())


async def test_inviting_records_member_invited_for_the_whole_project(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)

    # when
    payload = (await invite(schema, owner.token, owner.project_id, "e@example.com", "VIEWER")).ok()[
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


async def test_inviting_an_existing_member_is_a_conflict(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await join(schema, owner, "VIEWER")
    before = await state(owner.project_id)

    # when
    again = await invite(schema, owner.token, owner.project_id, member.email.upper())
    yourself = await invite(schema, owner.token, owner.project_id, owner.email)

    # then
    assert_refused(again, "inviteMember", "CONFLICT")
    assert_refused(yourself, "inviteMember", "CONFLICT")
    assert await state(owner.project_id) == before


async def test_inviting_an_email_again_replaces_its_pending_invitation(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    first = (
        await invite(schema, owner.token, owner.project_id, "twice@example.com", "VIEWER")
    ).ok()
    second = (
        await invite(schema, owner.token, owner.project_id, "twice@example.com", "ADMIN")
    ).ok()
    token = await schema.sign_up("twice@example.com", PASSWORD)

    # when
    stale = await accept(schema, token, first["inviteMember"]["token"])
    fresh = await accept(schema, token, second["inviteMember"]["token"])

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
    schema: SchemaApi, email: str, environments: str, field: str
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    elsewhere = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    environment_ids = {
        "none": [],
        "missing": [owner.environment_id, MISSING_ENVIRONMENT_ID],
        "another project's": [elsewhere.environment_id],
        "101": [owner.environment_id] * 101,
    }[environments]
    before = await state(owner.project_id)

    # when
    result = await invite(schema, owner.token, owner.project_id, email, "VIEWER", environment_ids)

    # then
    assert_bad_input(result, field)
    assert await state(owner.project_id) == before


async def test_an_unknown_role_is_refused_by_graphql_validation(schema: SchemaApi) -> None:
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)

    result = await invite(schema, owner.token, owner.project_id, "x@example.com", "SUPERUSER")

    assert result.data is None
    assert len(result.errors) == 1
