"""acceptInvitation, and closed sign-up admitting invited emails."""

from __future__ import annotations

from unittest.mock import ANY

import pytest

from keyplane.models import Invitation, Member
from keyplane.permissions.scopes import Role
from keyplane.settings import SignupPolicy
from tests import factories
from tests.helpers import Api, Clock, Result, new_tenant
from tests.member_helpers import (
    ACCEPT,
    CLIENT_IP,
    DEV_AND_PROD,
    NO_INVITATION,
    PASSWORD,
    PROJECT,
    SEVEN_DAYS,
    SINGLE_SCOPES,
    Joined,
    accept,
    add_member,
    assert_refused,
    development,
    events,
    invite,
    member_view,
    members_of,
    state,
    whoami,
)
from tests.schema_client import SchemaApi

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


async def test_accepting_takes_effect_on_the_next_request(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (
        await invite(schema, owner.token, owner.project_id, "bo@example.com", "VIEWER")
    ).ok()["inviteMember"]
    token = await schema.sign_up("bo@example.com", PASSWORD)
    outsider = await schema.gql(PROJECT, {"id": owner.project_id}, token=token)

    # when
    (await accept(schema, token, invited["token"])).ok()
    insider = await schema.gql(PROJECT, {"id": owner.project_id}, token=token)

    # then
    assert outsider.codes == ["NOT_FOUND"]
    assert insider.ok()["project"] == {
        "id": owner.project_id,
        "environments": [{"id": owner.environment_id}, {"id": owner.other_environment_id}],
    }


async def test_accepting_records_the_join_as_member_updated_by_the_new_member(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (
        await invite(
            schema,
            owner.token,
            owner.project_id,
            "jo@example.com",
            "DEVELOPER",
            [owner.other_environment_id],
        )
    ).ok()["inviteMember"]
    token = await schema.sign_up("jo@example.com", PASSWORD)

    # when
    member = (await accept(schema, token, invited["token"])).ok()["acceptInvitation"]

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


async def test_an_invitation_cannot_be_used_twice(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (await invite(schema, owner.token, owner.project_id, "once@example.com")).ok()[
        "inviteMember"
    ]
    token = await schema.sign_up("once@example.com", PASSWORD)
    (await accept(schema, token, invited["token"])).ok()
    before = await state(owner.project_id)

    # when
    again = await accept(schema, token, invited["token"])

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
        assert isinstance(result, Result)  # over HTTP: the whole body
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


async def test_an_invitation_is_valid_until_just_before_seven_days(
    schema: SchemaApi, clock: Clock
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (await invite(schema, owner.token, owner.project_id, "late@example.com")).ok()

    # when
    await schema.sign_up("late@example.com", PASSWORD)
    clock.advance(SEVEN_DAYS - 60)
    token = schema.oauth.token(
        sub="late-at-issuer", email="late@example.com", scope="project:manage"
    )
    result = await accept(schema, token, invited["inviteMember"]["token"])

    # then
    assert result.ok()["acceptInvitation"]["role"] == "DEVELOPER"


async def test_accepting_when_already_a_member_is_a_conflict(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    member = await add_member(schema, owner, Role.VIEWER)
    # An invitation issued before the user became a member by another way.
    await Member.filter(id=member.member_id).delete()
    invited = (await invite(schema, owner.token, owner.project_id, member.email)).ok()
    await Member.create(project_id=owner.project_id, user_id=member.user_id, role=Role.VIEWER)
    before = await state(owner.project_id)

    # when
    result = await accept(schema, member.token, invited["inviteMember"]["token"])

    # then
    assert_refused(result, "acceptInvitation", "CONFLICT")
    assert await state(owner.project_id) == before


async def test_accepting_without_credentials_is_unauthenticated(schema: SchemaApi) -> None:
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (await invite(schema, owner.token, owner.project_id, "z@example.com")).ok()

    result = await schema.gql(ACCEPT, {"token": invited["inviteMember"]["token"]})

    assert_refused(result, "acceptInvitation", "UNAUTHENTICATED")


@pytest.mark.parametrize("scope", SINGLE_SCOPES)
async def test_an_api_key_cannot_accept_an_invitation(schema: SchemaApi, scope: str) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    other = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (await invite(schema, owner.token, owner.project_id, other.email)).ok()
    _, secret = await schema.create_key(other.token, other.environment_id, [scope])
    before = await state(owner.project_id)

    # when
    result = await accept(schema, secret, invited["inviteMember"]["token"])

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
    schema: SchemaApi, scope: str, outcome: str
) -> None:
    # given
    owner = await factories.tenant(schema.app, environments=DEV_AND_PROD)
    invited = (await invite(schema, owner.token, owner.project_id, "oa@example.com", "VIEWER")).ok()
    await schema.sign_up("oa@example.com", PASSWORD)
    token = schema.oauth.token(sub="oa-at-issuer", email="oa@example.com", scope=scope)

    # when
    result = await accept(schema, token, invited["inviteMember"]["token"])

    # then
    if outcome == "OK":
        assert result.ok()["acceptInvitation"]["role"] == "VIEWER"
    else:
        assert_refused(result, "acceptInvitation", outcome)


# --- closed sign-up admits invited emails --------------------------------------------------------

closed_signup = pytest.mark.parametrize("signup_policy", [SignupPolicy.CLOSED])


@closed_signup
async def test_with_closed_sign_up_an_invited_email_signs_up_and_accepts(schema: SchemaApi) -> None:
    # given: the first user may always sign up
    owner = await factories.tenant(schema.app, email="first@example.com", environments=DEV_AND_PROD)
    invited = (await invite(schema, owner.token, owner.project_id, "Guest@Example.com")).ok()

    # when
    token = await schema.sign_up("guest@example.com", PASSWORD)
    member = await accept(schema, token, invited["inviteMember"]["token"])
    stranger = await schema.gql(
        "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken } }",
        {"input": {"email": "stranger@example.com", "password": PASSWORD, "name": "S"}},
    )

    # then
    assert member.ok()["acceptInvitation"]["user"]["email"] == "guest@example.com"
    assert stranger.codes == ["FORBIDDEN"]


@closed_signup
async def test_with_closed_sign_up_an_expired_or_replaced_invitation_admits_nobody(
    schema: SchemaApi, clock: Clock
) -> None:
    # given
    owner = await factories.tenant(schema.app, email="first@example.com", environments=DEV_AND_PROD)
    (await invite(schema, owner.token, owner.project_id, "late@example.com")).ok()
    clock.advance(SEVEN_DAYS + 1)

    # when
    result = await schema.gql(
        "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken } }",
        {"input": {"email": "late@example.com", "password": PASSWORD, "name": "L"}},
    )

    # then
    assert result.codes == ["FORBIDDEN"]
