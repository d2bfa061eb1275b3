"""rotateApiKey: a new key, the old one working until the overlap ends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import pytest

from tests.api_key_helpers import (
    MAX_OVERLAP,
    ROTATE_KEY,
    SECRET_RE,
    VIEWER,
    assert_bad_input,
    assert_refused_credentials,
    instant,
    read_key,
    revoke,
    snapshot,
)
from tests.helpers import Api, Clock, new_tenant

# --- rotateApiKey ----------------------------------------------------------------------------


async def test_rotating_issues_a_new_key_and_the_old_one_works_until_the_overlap_ends(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api)
    old_id, old_secret = await api.create_key(
        owner.token, owner.environment_id, ["VIEW_ANALYTICS", "MANAGE_TEMPLATES"], name="worker"
    )

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": old_id, "expireOldInSeconds": 600}}, token=owner.token
    )

    # then
    payload = result.ok()["rotateApiKey"]
    new_secret = payload["secret"]
    assert payload["apiKey"] == {
        "id": ANY,
        "name": "worker",
        "prefix": new_secret[:11],
        "scopes": ["MANAGE_TEMPLATES", "VIEW_ANALYTICS"],
        "status": "ACTIVE",
        "expiresAt": None,
        "environment": {"id": owner.environment_id},
    }
    new_id = payload["apiKey"]["id"]
    assert new_id != old_id
    assert SECRET_RE.match(new_secret)
    assert new_secret != old_secret
    assert (await api.gql(VIEWER, token=new_secret)).ok()["viewer"]["apiKey"]["id"] == new_id
    clock.advance(599)
    assert (await api.gql(VIEWER, token=old_secret)).ok()["viewer"]["apiKey"]["id"] == old_id
    clock.advance(2)
    assert_refused_credentials(await api.gql(VIEWER, token=old_secret))
    assert (await api.gql(VIEWER, token=new_secret)).ok()["viewer"]["apiKey"]["id"] == new_id
    assert (await read_key(api, owner.token, old_id))["status"] == "EXPIRED"


async def test_rotating_with_no_overlap_retires_the_old_key_at_once(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    old_id, old_secret = await api.create_key(owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": old_id, "expireOldInSeconds": 0}}, token=owner.token
    )

    # then
    new_secret = result.ok()["rotateApiKey"]["secret"]
    assert_refused_credentials(await api.gql(VIEWER, token=old_secret))
    assert (await api.gql(VIEWER, token=new_secret)).ok()["viewer"]["kind"] == "API_KEY"
    assert (await read_key(api, owner.token, old_id))["status"] == "EXPIRED"


async def test_rotating_accepts_an_overlap_of_seven_days(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    old_id, old_secret = await api.create_key(owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": old_id, "expireOldInSeconds": MAX_OVERLAP}}, token=owner.token
    )

    # then
    assert result.ok()["rotateApiKey"]["apiKey"]["status"] == "ACTIVE"
    old = await read_key(api, owner.token, old_id)
    expected = datetime.now(UTC) + timedelta(seconds=MAX_OVERLAP)
    assert abs(instant(old["expiresAt"]) - expected) < timedelta(minutes=1)
    assert (await api.gql(VIEWER, token=old_secret)).ok()["viewer"]["apiKey"]["id"] == old_id


async def test_a_management_key_may_rotate_itself(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 0}}, token=secret
    )

    # then
    payload = result.ok()["rotateApiKey"]
    assert payload["apiKey"]["scopes"] == ["MANAGE_PROJECT"]
    assert_refused_credentials(await api.gql(VIEWER, token=secret))
    assert (await api.gql(VIEWER, token=payload["secret"])).ok()["viewer"]["kind"] == "API_KEY"


async def test_a_key_expiring_at_the_end_of_time_can_be_rotated(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    last_instant = "9999-12-31T23:59:59.999999+00:00"
    key_id, _ = await api.create_key(owner.token, owner.environment_id, expires_at=last_instant)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 60}}, token=owner.token
    )

    # then
    assert result.ok()["rotateApiKey"]["apiKey"]["status"] == "ACTIVE"


@pytest.mark.parametrize("seconds", [-1, MAX_OVERLAP + 1])
async def test_rotating_with_an_overlap_outside_0_to_7_days_is_refused(
    api: Api, seconds: int
) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": seconds}}, token=owner.token
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert_bad_input(result, "expireOldInSeconds")
    assert await snapshot(api, owner.token, owner.environment_id) == before


async def test_rotating_a_revoked_key_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    await revoke(api, owner.token, key_id)
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 60}}, token=owner.token
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert result.codes == ["CONFLICT"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


async def test_a_management_key_cannot_rotate_a_key_with_scopes_it_lacks(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 0}}, token=manager
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert result.codes == ["FORBIDDEN"]
    assert await snapshot(api, owner.token, owner.environment_id) == before
