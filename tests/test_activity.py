"""The activity log: what happened to keys, who did it, from where; refusals aggregated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.applications import Starlette

from keyplane.models import ActivityEvent
from keyplane.usage.buffer import UsageBuffer
from tests import factories
from tests.helpers import Api, Client, new_tenant
from tests.schema_client import SchemaApi

ACTIVITY = """
query($env: ID!, $first: Int, $after: String, $kinds: [ActivityKind!]) {
  activity(environmentId: $env, first: $first, after: $after, kinds: $kinds) {
    edges { node { kind actor target ip count } }
    pageInfo { hasNextPage endCursor }
  }
}"""
UPDATE = 'mutation($id: ID!) { updateApiKey(input: {id: $id, name: "renamed"}) { id } }'
ROTATE = "mutation($id: ID!) { rotateApiKey(input: {id: $id}) { apiKey { id } secret } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
DELETE = "mutation($id: ID!) { deleteApiKey(id: $id) { id } }"
VIEWER = "{ viewer { kind } }"


async def _events(api: Client, token: str, env: str, **variables: Any) -> list[dict[str, Any]]:
    result = await api.gql(ACTIVITY, {"env": env, **variables}, token=token)
    return [edge["node"] for edge in result.ok()["activity"]["edges"]]


async def test_every_key_change_is_logged_newest_first_with_actor_target_and_ip(
    schema: SchemaApi,
) -> None:
    # given
    tenant = await factories.tenant(schema.app)
    token, env = tenant.token, tenant.environment_id
    user = await schema.user_id(token)
    key_id, secret = await schema.create_key(token, env, ["VIEW_ANALYTICS"], name="ci")

    # when
    (await schema.gql(UPDATE, {"id": key_id}, token=token)).ok()
    rotated = (await schema.gql(ROTATE, {"id": key_id}, token=token)).ok()["rotateApiKey"]
    new_id = rotated["apiKey"]["id"]
    (await schema.gql(REVOKE, {"id": new_id}, token=token)).ok()
    (await schema.gql(DELETE, {"id": new_id}, token=token)).ok()

    # then
    events = await _events(schema, token, env)
    assert [e["kind"] for e in events] == [
        "KEY_DELETED",
        "KEY_REVOKED",
        "KEY_ROTATED",
        "KEY_UPDATED",
        "KEY_CREATED",
    ]
    assert {e["actor"] for e in events} == {f"user:{user}"}
    assert {e["ip"] for e in events} == {"203.0.113.7"}
    assert events[-1]["target"] == f"key:{key_id} ({secret[:11]}) ci"
    assert events[2]["target"].startswith(f"key:{key_id} ({secret[:11]}) renamed -> {new_id} (fm_")
    assert all(secret not in e["target"] and rotated["secret"] not in e["target"] for e in events)


async def test_the_log_filters_by_kind_and_pages_with_cursors(schema: SchemaApi) -> None:
    # given
    tenant = await factories.tenant(schema.app)
    token, env = tenant.token, tenant.environment_id
    for name in ("a", "b", "c"):
        key_id, _ = await schema.create_key(token, env, ["VIEW_ANALYTICS"], name=name)
    (await schema.gql(REVOKE, {"id": key_id}, token=token)).ok()

    # when
    revoked = await _events(schema, token, env, kinds=["KEY_REVOKED"])
    first = (await schema.gql(ACTIVITY, {"env": env, "first": 2}, token=token)).ok()["activity"]
    rest = (
        await schema.gql(
            ACTIVITY, {"env": env, "first": 2, "after": first["pageInfo"]["endCursor"]}, token=token
        )
    ).ok()["activity"]

    # then
    assert [e["kind"] for e in revoked] == ["KEY_REVOKED"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["kind"] for e in first["edges"] + rest["edges"]] == [
        "KEY_REVOKED",
        "KEY_CREATED",
        "KEY_CREATED",
        "KEY_CREATED",
    ]
    assert rest["pageInfo"]["hasNextPage"] is False


async def test_reading_the_log_needs_manage_project_or_view_analytics_there(
    schema: SchemaApi,
) -> None:
    # given
    tenant = await factories.tenant(schema.app)
    token, project_id, env = tenant.token, tenant.project_id, tenant.environment_id
    other_env = await schema.create_environment(token, project_id)
    _, analyst = await schema.create_key(token, env, ["VIEW_ANALYTICS"])
    _, generator = await schema.create_key(token, env, ["GENERATE_DOCUMENTS"])
    stranger = await schema.sign_up()

    # when
    outcomes = {
        "analyst": (await schema.gql(ACTIVITY, {"env": env}, token=analyst)).codes,
        "generator": (await schema.gql(ACTIVITY, {"env": env}, token=generator)).codes,
        "analyst elsewhere": (await schema.gql(ACTIVITY, {"env": other_env}, token=analyst)).codes,
        "stranger": (await schema.gql(ACTIVITY, {"env": env}, token=stranger)).codes,
        "anonymous": (await schema.gql(ACTIVITY, {"env": env})).codes,
    }

    # then
    assert outcomes == {
        "analyst": [],
        "generator": ["FORBIDDEN"],
        "analyst elsewhere": ["NOT_FOUND"],
        "stranger": ["NOT_FOUND"],
        "anonymous": ["UNAUTHENTICATED"],
    }


async def test_a_revoked_key_presented_again_is_logged_once_a_minute_by_prefix(
    api: Api, app: Starlette
) -> None:
    # given
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    key_id, secret = await api.create_key(token, env, ["VIEW_ANALYTICS"], name="old")
    (await api.gql(REVOKE, {"id": key_id}, token=token)).ok()

    # when
    statuses = [(await api.gql(VIEWER, token=secret)).status for _ in range(3)]
    await app.state.services.usage.flush()

    # then
    assert statuses == [401, 401, 401]
    failed = await _events(api, token, env, kinds=["AUTH_FAILED"])
    assert failed == [
        {
            "kind": "AUTH_FAILED",
            "actor": "anonymous",
            "target": f"key:{key_id} ({secret[:11]}) old",
            "ip": "203.0.113.7",
            "count": 3,
        }
    ]


async def test_unknown_keys_are_counted_in_metrics_not_logged(api: Api, app: Starlette) -> None:
    # given
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    unknown = "fm_" + "A" * 26 + "000000"

    # when
    await api.gql(VIEWER, token=unknown)
    await api.gql(VIEWER, token="fm_not-even-well-formed")
    await app.state.services.usage.flush()
    metrics = (await api.client.get("/metrics")).text

    # then
    assert await _events(api, token, env, kinds=["AUTH_FAILED"]) == []
    assert 'keyplane_auth_failures_total{reason="malformed_key"} 2' in metrics


async def test_rate_limited_requests_are_logged_once_a_minute_with_their_count(
    api: Api, app: Starlette
) -> None:
    # given: a key allowed two requests a minute
    tenant = await new_tenant(api)
    token, env = tenant.token, tenant.environment_id
    created = await api.gql(
        """mutation($e: ID!) { createApiKey(input: {environmentId: $e, name: "tight",
             scopes: [VIEW_ANALYTICS], rateLimitPerMinute: 2}) { apiKey { id } secret } }""",
        {"e": env},
        token=token,
    )
    payload = created.ok()["createApiKey"]

    # when
    statuses = [(await api.gql(VIEWER, token=payload["secret"])).status for _ in range(5)]
    await app.state.services.usage.flush()

    # then
    assert statuses == [200, 200, 429, 429, 429]
    limited = await _events(api, token, env, kinds=["RATE_LIMITED"])
    assert [(e["actor"], e["count"]) for e in limited] == [(f"key:{payload['apiKey']['id']}", 3)]


async def test_events_past_the_retention_are_pruned(schema: SchemaApi, usage: UsageBuffer) -> None:
    # given: one event from 91 days ago, one from now
    tenant = await factories.tenant(schema.app)
    token, env = tenant.token, tenant.environment_id
    await schema.create_key(token, env, ["VIEW_ANALYTICS"])
    old = await ActivityEvent.filter(environment_id=env).first()
    assert old is not None
    old.at = datetime.now(UTC) - timedelta(days=91)
    await old.save()
    await schema.create_key(token, env, ["VIEW_ANALYTICS"])

    # when
    await usage.prune(datetime.now(UTC))

    # then
    assert len(await _events(schema, token, env)) == 1
