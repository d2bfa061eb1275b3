"""Hostile or odd requests found by a black-box review: each gets a typed answer, never a 500,
and none of them slips past the rate limiter or the activity log."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette

from tests.helpers import Api, new_tenant

VIEWER = "{ viewer { kind } }"
API_KEY = "query($id: ID!) { apiKey(id: $id) { id } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
DELETE = "mutation($id: ID!) { deleteApiKey(id: $id) { id } }"
KEYS_AFTER = """query($e: ID!, $after: String) {
  environment(id: $e) { apiKeys(first: 5, after: $after) { edges { node { id } } } } }"""
CREATE = """mutation($e: ID!, $at: DateTime) {
  createApiKey(input: {environmentId: $e, name: "k", scopes: [VIEW_ANALYTICS], expiresAt: $at})
  { apiKey { id } } }"""
USAGE = """query($id: ID!, $from: DateTime!, $to: DateTime!) {
  apiKey(id: $id) { usage(from: $from, to: $to, granularity: DAY) { at } } }"""
LIMITED_KEY = """mutation($e: ID!, $n: Int!) {
  createApiKey(input: {environmentId: $e, name: "tight", scopes: [VIEW_ANALYTICS],
                       rateLimitPerMinute: $n}) { apiKey { id } secret } }"""
SET_LIMIT = (
    "mutation($id: ID!, $n: Int!) { updateApiKey(input: {id: $id, rateLimitPerMinute: $n}) { id } }"
)
ACTIVITY = """query($e: ID!) { activity(environmentId: $e, kinds: [AUTH_FAILED]) {
  edges { node { kind count target } } } }"""


@pytest.mark.parametrize("body", [b'"hello"', b"42", b"null", b"true", b"[1]", b"[]", b"[[]]"])
async def test_a_json_body_that_is_not_an_object_is_a_typed_400(api: Api, body: bytes) -> None:
    # when
    response = await api.client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )

    # then
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "body"}
    assert "X-RateLimit-Remaining" in response.headers


async def test_a_body_that_is_not_utf8_is_a_typed_400(api: Api) -> None:
    response = await api.client.post(
        "/graphql", content=b'{"query": "\xff\xfe"}', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_lone_surrogate_in_a_variable_is_a_typed_400(api: Api) -> None:
    # given
    token = (await new_tenant(api)).token

    # when: JSON may spell one, Unicode text may not hold it
    response = await api.client.post(
        "/graphql",
        content=b'{"query": "mutation($n: String!) { createProject(input: {name: $n}) { id } }",'
        b' "variables": {"n": "\\ud800x"}}',
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )

    # then
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_an_id_longer_than_ours_is_not_found_like_any_missing_id(api: Api) -> None:
    # given
    token = (await new_tenant(api)).token

    # when
    missing = await api.gql(API_KEY, {"id": "key_missing"}, token=token)
    too_long = await api.gql(API_KEY, {"id": "00000000-0000-0000-0000-000000000000"}, token=token)
    revoke = await api.gql(REVOKE, {"id": "x" * 200}, token=token)

    # then
    assert too_long.body == missing.body
    assert missing.codes == ["NOT_FOUND"]
    assert revoke.codes == ["NOT_FOUND"]


async def test_a_cursor_naming_an_over_long_id_is_bad_input(api: Api) -> None:
    # given
    import base64

    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    cursor = base64.urlsafe_b64encode(b"2026-11-26T20:34:19+00:00|key_" + b"k" * 60).decode()

    # when
    result = await api.gql(KEYS_AFTER, {"e": env, "after": cursor}, token=token)

    # then
    assert result.codes == ["BAD_USER_INPUT"]
    assert result.errors[0]["extensions"]["field"] == "after"


async def test_instants_past_the_end_of_time_are_bad_input(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    key_id, _ = await api.create_key(token, env, ["VIEW_ANALYTICS"])

    # when
    expiry = await api.gql(CREATE, {"e": env, "at": "9999-12-31T23:59:59-12:00"}, token=token)
    usage = await api.gql(
        USAGE,
        {"id": key_id, "from": "9999-12-30T00:00:00Z", "to": "9999-12-31T23:59:59Z"},
        token=token,
    )

    # then
    assert (expiry.codes, expiry.errors[0]["extensions"]["field"]) == (
        ["BAD_USER_INPUT"],
        "expiresAt",
    )
    assert usage.codes == ["BAD_USER_INPUT"]


async def test_a_document_with_several_operations_needs_an_operation_name(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    document = (
        'mutation B($e: ID!) { a: createApiKey(input: {environmentId: $e, name: "a", '
        "scopes: [VIEW_ANALYTICS]}) { secret } } query A { viewer { kind } }"
    )

    # when
    unnamed = await api.gql(document, {"e": env}, token=token)
    keys = (await api.gql(KEYS_AFTER, {"e": env}, token=token)).ok()

    # then: refused before running, so it cannot run a mutation at the price of a query
    assert unnamed.status == 400
    assert unnamed.codes == ["BAD_USER_INPUT"]
    assert keys["environment"]["apiKeys"]["edges"] == []


async def test_raising_a_keys_limit_keeps_what_it_spent_this_minute(api: Api) -> None:
    # given: a key at 5 a minute has spent all 5
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    created = (await api.gql(LIMITED_KEY, {"e": env, "n": 5}, token=token)).ok()["createApiKey"]
    secret, key_id = created["secret"], created["apiKey"]["id"]
    assert [(await api.gql(VIEWER, token=secret)).status for _ in range(6)] == [200] * 5 + [429]

    # when
    (await api.gql(SET_LIMIT, {"id": key_id, "n": 8}, token=token)).ok()
    statuses = [(await api.gql(VIEWER, token=secret)).status for _ in range(4)]

    # then: 8 in the minute, not 5 + 8
    assert statuses == [200, 200, 200, 429]


async def test_auth_failures_are_logged_even_when_the_key_is_deleted_before_the_flush(
    api: Api, app: Starlette
) -> None:
    # given
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    key_id, secret = await api.create_key(token, env, ["VIEW_ANALYTICS"], name="gone")
    (await api.gql(REVOKE, {"id": key_id}, token=token)).ok()
    assert [(await api.gql(VIEWER, token=secret)).status for _ in range(2)] == [401, 401]

    # when
    (await api.gql(DELETE, {"id": key_id}, token=token)).ok()
    await app.state.services.usage.flush()

    # then
    events = (await api.gql(ACTIVITY, {"e": env}, token=token)).ok()["activity"]["edges"]
    assert [e["node"] for e in events] == [
        {"kind": "AUTH_FAILED", "count": 2, "target": f"key:{key_id} ({secret[:11]}) gone"}
    ]
