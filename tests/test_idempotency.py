"""Idempotent retries: the same caller sending the same idempotencyKey with the same input within
24 hours gets the first call's result back, and nothing is done twice; the same key with another
input is a CONFLICT. Secrets and tokens are never kept to answer a replay."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from starlette.applications import Starlette

from keyplane.models import IdempotentRequest
from keyplane.usage.buffer import UsageBuffer
from tests.api_key_helpers import ROTATE_KEY, SECRET_RE, every_stored_row, snapshot
from tests.helpers import Api, Clock, Result, new_tenant
from tests.member_helpers import INVITE, TOKEN_RE
from tests.template_helpers import GENERATE_DOCUMENT, LIST_DOCUMENTS, new_template

# Idempotency keys as clients make them: opaque, unique per request (no secret-looking literal).
RETRY_KEY = "retry-" + hashlib.sha256(b"keyplane idempotency test").hexdigest()[:24]
OTHER_KEY = "retry-" + hashlib.sha256(b"keyplane idempotency other").hexdigest()[:24]
DAY = 24 * 3600
MANAGER_SCOPES = ["MANAGE_PROJECT", "VIEW_ANALYTICS"]

CREATE_KEY = """
mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id name scopes } secret replayed }
}
"""
CREATE_PROJECT = (
    "mutation($input: CreateProjectInput!) { createProject(input: $input) { id name } }"
)
CREATE_ENVIRONMENT = """
mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id name } }
"""
INVITE_REPLAYED = INVITE.replace("token\n", "token\n    replayed\n")
PROJECTS = "{ projects { id } }"
ENVIRONMENTS = "query($id: ID!) { project(id: $id) { environments { id } } }"
ROTATE = """
mutation($input: RotateApiKeyInput!) {
  rotateApiKey(input: $input) { apiKey { id expiresAt } secret replayed }
}
"""


def key_input(environment_id: str, *, name: str = "server", **extra: Any) -> dict[str, Any]:
    return {
        "input": {
            "environmentId": environment_id,
            "name": name,
            "scopes": ["VIEW_ANALYTICS"],
            "idempotencyKey": RETRY_KEY,
            **extra,
        }
    }


async def key_ids(api: Api, token: str, environment_id: str) -> list[str]:
    return [key["id"] for key in await snapshot(api, token, environment_id)]


# --- createApiKey ------------------------------------------------------------------------------


async def test_a_retried_create_api_key_answers_the_first_key_without_its_secret(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api)
    first = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)).ok()

    # when
    retried = await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)

    # then
    created = first["createApiKey"]
    assert SECRET_RE.match(created["secret"])
    assert created["replayed"] is False
    assert retried.ok() == {
        "createApiKey": {"apiKey": created["apiKey"], "secret": None, "replayed": True}
    }
    assert await key_ids(api, owner.token, owner.environment_id) == [created["apiKey"]["id"]]


async def test_without_an_idempotency_key_every_call_creates_a_key(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    variables = key_input(owner.environment_id, idempotencyKey=None)

    # when
    first = (await api.gql(CREATE_KEY, variables, token=owner.token)).ok()
    second = (await api.gql(CREATE_KEY, variables, token=owner.token)).ok()

    # then
    assert first["createApiKey"]["replayed"] is second["createApiKey"]["replayed"] is False
    assert len(await key_ids(api, owner.token, owner.environment_id)) == 2


async def test_the_same_key_with_another_input_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)).ok()
    before = await snapshot(api, owner.token, owner.environment_id)

    # when
    result = await api.gql(
        CREATE_KEY, key_input(owner.environment_id, name="other"), token=owner.token
    )

    # then
    assert result.data == {"createApiKey": None}
    assert result.codes == ["CONFLICT"]
    assert await snapshot(api, owner.token, owner.environment_id) == before


@pytest.mark.parametrize("idempotency_key", ["", "k" * 256])
async def test_an_empty_or_overlong_idempotency_key_is_refused(
    api: Api, idempotency_key: str
) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await api.gql(
        CREATE_KEY,
        key_input(owner.environment_id, idempotencyKey=idempotency_key),
        token=owner.token,
    )

    # then
    assert result.data == {"createApiKey": None}
    assert [e["extensions"] for e in result.errors] == [
        {"code": "BAD_USER_INPUT", "field": "idempotencyKey"}
    ]
    assert await key_ids(api, owner.token, owner.environment_id) == []


async def test_an_idempotency_key_of_255_characters_is_accepted(api: Api) -> None:
    owner = await new_tenant(api)
    variables = key_input(owner.environment_id, idempotencyKey="k" * 255)
    assert (await api.gql(CREATE_KEY, variables, token=owner.token)).ok()["createApiKey"]["secret"]


async def test_after_24_hours_the_same_key_does_the_work_again(api: Api, clock: Clock) -> None:
    # given: a management key calls (a dashboard session would not last the day)
    owner = await new_tenant(api)
    _, manager = await api.create_key(owner.token, owner.environment_id, MANAGER_SCOPES)
    first = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=manager)).ok()
    clock.advance(DAY - 60)
    almost = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=manager)).ok()

    # when
    clock.advance(61)
    later = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=manager)).ok()

    # then
    assert almost["createApiKey"]["replayed"] is True
    assert later["createApiKey"]["replayed"] is False
    assert SECRET_RE.match(later["createApiKey"]["secret"])
    assert later["createApiKey"]["apiKey"]["id"] != first["createApiKey"]["apiKey"]["id"]
    assert len(await key_ids(api, manager, owner.environment_id)) == 3


async def test_keys_past_the_replay_window_are_pruned(
    app: Starlette, api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api)
    (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)).ok()
    usage: UsageBuffer = app.state.services.usage
    kept = await usage.prune(clock())
    clock.advance(DAY + 1)

    # when
    pruned = await usage.prune(clock())

    # then
    assert (kept, pruned) == (0, 1)
    assert await IdempotentRequest.all().count() == 0


async def test_idempotency_keys_belong_to_their_caller(api: Api) -> None:
    # given: the owner and one of its management keys use the same idempotency key
    owner = await new_tenant(api)
    _, manager = await api.create_key(owner.token, owner.environment_id, MANAGER_SCOPES)
    first = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)).ok()

    # when
    other = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=manager)).ok()

    # then
    assert other["createApiKey"]["replayed"] is False
    assert other["createApiKey"]["apiKey"]["id"] != first["createApiKey"]["apiKey"]["id"]


async def test_a_retry_after_the_key_was_deleted_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    first = (await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)).ok()
    deleted = await api.gql(
        "mutation($id: ID!) { deleteApiKey(id: $id) { id } }",
        {"id": first["createApiKey"]["apiKey"]["id"]},
        token=owner.token,
    )

    # when
    retried = await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)

    # then
    deleted.ok()
    assert retried.data == {"createApiKey": None}
    assert retried.codes == ["CONFLICT"]
    assert await key_ids(api, owner.token, owner.environment_id) == []


async def test_a_call_that_failed_leaves_its_idempotency_key_unused(api: Api) -> None:
    # given: the first call fails inside its transaction (the project name is taken)
    owner = await new_tenant(api)
    await api.create_project(owner.token, "taken")
    failed = await api.gql(
        CREATE_PROJECT, {"input": {"name": "taken", "idempotencyKey": RETRY_KEY}}, token=owner.token
    )

    # when: retried with the input corrected
    retried = await api.gql(
        CREATE_PROJECT,
        {"input": {"name": "renamed", "idempotencyKey": RETRY_KEY}},
        token=owner.token,
    )

    # then
    assert failed.codes == ["CONFLICT"]
    assert retried.ok()["createProject"]["name"] == "renamed"


async def test_concurrent_identical_calls_create_exactly_one_key(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    variables = key_input(owner.environment_id)

    # when
    results = await asyncio.gather(
        *(api.gql(CREATE_KEY, variables, token=owner.token) for _ in range(6))
    )

    # then
    payloads = sorted(
        (result.ok()["createApiKey"] for result in results), key=lambda p: p["replayed"]
    )
    [key_id] = await key_ids(api, owner.token, owner.environment_id)
    assert [p["apiKey"]["id"] for p in payloads] == [key_id] * 6
    assert [p["replayed"] for p in payloads] == [False] + [True] * 5
    assert SECRET_RE.match(payloads[0]["secret"])
    assert [p["secret"] for p in payloads[1:]] == [None] * 5


async def test_no_secret_or_token_is_stored_for_replays(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id)

    # when
    created = await api.gql(CREATE_KEY, key_input(owner.environment_id), token=owner.token)
    rotated = await api.gql(
        ROTATE, {"input": {"id": key_id, "idempotencyKey": RETRY_KEY}}, token=owner.token
    )
    invited = await api.gql(INVITE_REPLAYED, invitation(owner.project_id), token=owner.token)

    # then
    stored = await every_stored_row()
    secrets = [
        created.ok()["createApiKey"]["secret"],
        rotated.ok()["rotateApiKey"]["secret"],
        invited.ok()["inviteMember"]["token"],
    ]
    assert all(secret and secret not in stored for secret in secrets)
    assert await IdempotentRequest.all().count() == 3


# --- rotateApiKey ------------------------------------------------------------------------------


async def test_a_retried_rotation_answers_the_same_replacement_without_its_secret(
    api: Api, clock: Clock
) -> None:
    # given
    owner = await new_tenant(api)
    old_id, _ = await api.create_key(owner.token, owner.environment_id)
    variables = {"input": {"id": old_id, "expireOldInSeconds": 3600, "idempotencyKey": RETRY_KEY}}
    first = (await api.gql(ROTATE, variables, token=owner.token)).ok()["rotateApiKey"]
    clock.advance(60)

    # when
    retried = await api.gql(ROTATE, variables, token=owner.token)

    # then
    assert SECRET_RE.match(first["secret"])
    assert retried.ok() == {
        "rotateApiKey": {
            "apiKey": {"id": first["apiKey"]["id"], "expiresAt": None},
            "secret": None,
            "replayed": True,
        }
    }
    assert len(await key_ids(api, owner.token, owner.environment_id)) == 2


async def test_a_retried_rotation_with_another_overlap_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    old_id, _ = await api.create_key(owner.token, owner.environment_id)
    (
        await api.gql(
            ROTATE_KEY,
            {"input": {"id": old_id, "expireOldInSeconds": 60, "idempotencyKey": RETRY_KEY}},
            token=owner.token,
        )
    ).ok()

    # when
    result = await api.gql(
        ROTATE_KEY,
        {"input": {"id": old_id, "expireOldInSeconds": 0, "idempotencyKey": RETRY_KEY}},
        token=owner.token,
    )

    # then
    assert result.data == {"rotateApiKey": None}
    assert [e["extensions"] for e in result.errors] == [{"code": "CONFLICT"}]


# --- createProject, createEnvironment ------------------------------------------------------------


async def test_a_retried_create_project_answers_the_same_project(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    variables = {"input": {"name": "retried", "idempotencyKey": RETRY_KEY}}
    first = (await api.gql(CREATE_PROJECT, variables, token=owner.token)).ok()

    # when
    retried = await api.gql(CREATE_PROJECT, variables, token=owner.token)

    # then
    assert retried.ok() == first
    assert len((await api.gql(PROJECTS, token=owner.token)).ok()["projects"]) == 2


async def test_a_retried_create_environment_answers_the_same_environment(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    variables = {
        "input": {"projectId": owner.project_id, "name": "staging", "idempotencyKey": RETRY_KEY}
    }
    first = (await api.gql(CREATE_ENVIRONMENT, variables, token=owner.token)).ok()

    # when
    retried = await api.gql(CREATE_ENVIRONMENT, variables, token=owner.token)
    other = await api.gql(
        CREATE_ENVIRONMENT,
        {"input": {"projectId": owner.project_id, "name": "qa", "idempotencyKey": RETRY_KEY}},
        token=owner.token,
    )

    # then
    assert retried.ok() == first
    assert other.codes == ["CONFLICT"]
    environments = await api.gql(ENVIRONMENTS, {"id": owner.project_id}, token=owner.token)
    assert len(environments.ok()["project"]["environments"]) == 2


# --- inviteMember --------------------------------------------------------------------------------


def invitation(project_id: str, email: str = "invitee@example.com") -> dict[str, Any]:
    return {
        "input": {
            "projectId": project_id,
            "email": email,
            "role": "DEVELOPER",
            "idempotencyKey": RETRY_KEY,
        }
    }


async def test_a_retried_invitation_answers_the_same_invitation_without_its_token(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api)
    first = (await api.gql(INVITE_REPLAYED, invitation(owner.project_id), token=owner.token)).ok()

    # when
    retried = await api.gql(INVITE_REPLAYED, invitation(owner.project_id), token=owner.token)

    # then
    issued = first["inviteMember"]
    assert TOKEN_RE.match(issued["token"])
    assert issued["replayed"] is False
    assert retried.ok() == {
        "inviteMember": {"invitation": issued["invitation"], "token": None, "replayed": True}
    }


async def test_a_retried_invitation_to_another_email_is_a_conflict(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    (await api.gql(INVITE_REPLAYED, invitation(owner.project_id), token=owner.token)).ok()

    # when
    result = await api.gql(
        INVITE_REPLAYED, invitation(owner.project_id, "other@example.com"), token=owner.token
    )

    # then
    assert result.data == {"inviteMember": None}
    assert result.codes == ["CONFLICT"]


# --- generateDocument ----------------------------------------------------------------------------


async def generate(api: Api, token: str, template_id: str, name: str) -> Result:
    return await api.gql(
        GENERATE_DOCUMENT,
        {"input": {"templateId": template_id, "data": {"name": name}, "idempotencyKey": RETRY_KEY}},
        token=token,
    )


async def test_a_retried_generate_document_answers_the_same_document(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    template_id = await new_template(api, owner.token, owner.environment_id, publish=True)
    first = (await generate(api, owner.token, template_id, "Ada")).ok()

    # when
    retried = await generate(api, owner.token, template_id, "Ada")
    other = await generate(api, owner.token, template_id, "Grace")

    # then
    assert retried.ok() == first
    assert first["generateDocument"]["content"] == "Hello Ada!"
    assert other.codes == ["CONFLICT"]
    listed = await api.gql(LIST_DOCUMENTS, {"env": owner.environment_id}, token=owner.token)
    assert len(listed.ok()["documents"]["edges"]) == 1


async def test_the_same_scopes_in_another_order_are_the_same_input(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    scopes = ["VIEW_ANALYTICS", "GENERATE_DOCUMENTS"]
    first = (
        await api.gql(CREATE_KEY, key_input(owner.environment_id, scopes=scopes), token=owner.token)
    ).ok()

    # when
    retried = await api.gql(
        CREATE_KEY, key_input(owner.environment_id, scopes=scopes[::-1]), token=owner.token
    )

    # then
    assert retried.ok()["createApiKey"]["replayed"] is True
    assert retried.ok()["createApiKey"]["apiKey"]["id"] == first["createApiKey"]["apiKey"]["id"]
