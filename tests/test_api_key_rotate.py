"""rotateApiKey: a new key, the old one working until the overlap ends."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any
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
from tests.helpers import Api, Clock, in_future, new_tenant

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


# --- safe rotation: one replacement, linked both ways, lifetimes kept --------------------------

LINKS = """
query Links($id: ID!) {
  apiKey(id: $id) { id rotatedFrom { id name } replacedBy { id name } }
}
"""


async def rotate(api: Api, token: str, key_id: str, overlap: int = 3600) -> dict[str, Any]:
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": overlap}}, token=token
    )
    payload: dict[str, Any] = result.ok()["rotateApiKey"]
    return payload


async def test_a_rotated_key_and_its_replacement_name_each_other(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    first_id, _ = await api.create_key(owner.token, owner.environment_id, name="worker")
    second_id = (await rotate(api, owner.token, first_id))["apiKey"]["id"]

    # when
    third_id = (await rotate(api, owner.token, second_id))["apiKey"]["id"]

    # then
    links = [
        (await api.gql(LINKS, {"id": key_id}, token=owner.token)).ok()["apiKey"]
        for key_id in (first_id, second_id, third_id)
    ]
    assert links == [
        {"id": first_id, "rotatedFrom": None, "replacedBy": {"id": second_id, "name": "worker"}},
        {
            "id": second_id,
            "rotatedFrom": {"id": first_id, "name": "worker"},
            "replacedBy": {"id": third_id, "name": "worker"},
        },
        {"id": third_id, "rotatedFrom": {"id": second_id, "name": "worker"}, "replacedBy": None},
    ]


async def test_rotating_a_key_again_is_a_conflict_naming_its_replacement(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)
    replacement_id = (await rotate(api, owner.token, key_id))["apiKey"]["id"]
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 3600}}, token=owner.token
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert [e["extensions"] for e in result.errors] == [
        {"code": "CONFLICT", "replacedBy": replacement_id}
    ]
    assert await snapshot(api, owner.token, owner.environment_id) == before
    assert (await api.gql(VIEWER, token=secret)).ok()["viewer"]["apiKey"]["id"] == key_id


async def test_a_key_whose_replacement_was_deleted_cannot_be_rotated_again(api: Api) -> None:
    # given: a key without expiry, rotated with an hour of overlap, its replacement deleted
    # (which clears the link): its expiry is now the overlap, not a lifetime to copy
    owner = await new_tenant(api)
    key_id, secret = await api.create_key(owner.token, owner.environment_id)
    replacement_id = (await rotate(api, owner.token, key_id, 3600))["apiKey"]["id"]
    deleted = await api.gql(
        "mutation($id: ID!) { deleteApiKey(id: $id) { id } }",
        {"id": replacement_id},
        token=owner.token,
    )
    assert deleted.ok() == {"deleteApiKey": {"id": replacement_id}}
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 3600}}, token=owner.token
    )

    # then: no key is issued with the overlap as its lifetime
    assert result.data == {"rotateApiKey": None}
    assert result.codes == ["CONFLICT"]
    assert "replacement was deleted" in result.errors[0]["message"]
    assert await snapshot(api, owner.token, owner.environment_id) == before
    assert (await api.gql(VIEWER, token=secret)).ok()["viewer"]["apiKey"]["id"] == key_id


async def test_a_key_without_expiry_rotated_with_an_overlap_is_replaced_by_one_without_expiry(
    api: Api,
) -> None:
    # given: the retry that used to give the third key the overlap as its lifetime
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)
    first = await rotate(api, owner.token, key_id, 3600)

    # when
    retried = await api.gql(
        ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 3600}}, token=owner.token
    )
    second = await rotate(api, owner.token, first["apiKey"]["id"], 3600)

    # then
    assert retried.codes == ["CONFLICT"]
    assert first["apiKey"]["expiresAt"] is None
    assert second["apiKey"]["expiresAt"] is None
    expired = {
        key["id"]: key["expiresAt"]
        for key in await snapshot(api, owner.token, owner.environment_id)
    }
    assert expired[second["apiKey"]["id"]] is None
    assert expired[first["apiKey"]["id"]] is not None  # in its overlap now
    assert expired[key_id] is not None


async def test_a_key_with_an_expiry_is_replaced_by_one_with_the_same_lifetime(
    api: Api, clock: Clock
) -> None:
    # given: a key made to live 30 days, rotated 10 days in with a day of overlap
    owner = await new_tenant(api)
    _, manager = await api.create_key(
        owner.token, owner.environment_id, ["MANAGE_PROJECT", "VIEW_ANALYTICS"]
    )
    key_id, _ = await api.create_key(manager, owner.environment_id, expires_at=in_future(30))
    created = instant((await read_key(api, manager, key_id))["createdAt"])
    lifetime = instant((await read_key(api, manager, key_id))["expiresAt"]) - created
    clock.advance(10 * 24 * 3600)

    # when
    rotated = await rotate(api, manager, key_id, 24 * 3600)

    # then
    new_expiry = instant(rotated["apiKey"]["expiresAt"])
    assert abs(new_expiry - (clock() + lifetime)) < timedelta(minutes=1)
    old_expiry = instant((await read_key(api, manager, key_id))["expiresAt"])
    assert abs(old_expiry - (clock() + timedelta(days=1))) < timedelta(minutes=1)


async def test_concurrent_rotations_of_one_key_make_one_replacement(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)

    # when
    results = await asyncio.gather(
        *(
            api.gql(
                ROTATE_KEY, {"input": {"id": key_id, "expireOldInSeconds": 60}}, token=owner.token
            )
            for _ in range(4)
        )
    )

    # then
    done = [r.data["rotateApiKey"] for r in results if r.data["rotateApiKey"] is not None]
    assert len(done) == 1
    replacement_id = done[0]["apiKey"]["id"]
    refused = [e["extensions"] for r in results for e in r.errors]
    assert refused == [{"code": "CONFLICT", "replacedBy": replacement_id}] * 3
    assert len(await snapshot(api, owner.token, owner.environment_id)) == 2


async def test_the_key_a_key_replaced_is_read_with_the_rights_of_any_key_read(api: Api) -> None:
    # given: a key that may read only itself, made by rotation
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])
    rotated = await rotate(api, owner.token, key_id)

    # when
    result = await api.gql(
        "{ viewer { apiKey { id rotatedFrom { id } replacedBy { id } } } }",
        token=rotated["secret"],
    )

    # then
    assert result.data == {
        "viewer": {
            "apiKey": {"id": rotated["apiKey"]["id"], "rotatedFrom": None, "replacedBy": None}
        }
    }
    assert [(e["path"], e["extensions"]["code"]) for e in result.errors] == [
        (["viewer", "apiKey", "rotatedFrom"], "FORBIDDEN")
    ]
