"""ApiKey.scopesUsed and unusedScopes: which scope admitted each field a key called, recorded
with the usage counts and flushed with them, so that unused scopes can be taken away."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from starlette.applications import Starlette

from keyplane.models import ApiKeyScopeUse
from keyplane.permissions.scopes import Scope
from keyplane.services import Services
from tests import factories
from tests.helpers import Clock
from tests.schema_client import execute

SCOPES = """
query($id: ID!) { apiKey(id: $id) { scopesUsed { scope lastUsedAt } unusedScopes } }
"""
DOCUMENTS = "query($e: ID!) { documents(environmentId: $e) { edges { cursor } } }"
TEMPLATES = "query($e: ID!) { templates(environmentId: $e) { edges { cursor } } }"


async def _scopes(app: Starlette, token: str, key_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await execute(app, SCOPES, {"id": key_id}, credential=token)).ok()
    key: dict[str, Any] = found["apiKey"]
    return key


async def test_a_new_key_has_used_nothing_and_lists_every_scope_as_unused(app: Starlette) -> None:
    # given
    tenant = await factories.tenant(app)
    key = await factories.api_key(
        environment_id=tenant.environment_id,
        created_by_id=tenant.user_id,
        scopes=[Scope.VIEW_ANALYTICS, Scope.GENERATE_DOCUMENTS],
    )

    # then
    assert await _scopes(app, tenant.token, key.id) == {
        "scopesUsed": [],
        "unusedScopes": ["GENERATE_DOCUMENTS", "VIEW_ANALYTICS"],
    }


async def test_the_scope_that_admitted_a_field_is_recorded_and_survives_the_flush(
    app: Starlette, clock: Clock
) -> None:
    # given
    services: Services = app.state.services
    tenant = await factories.tenant(app)
    key = await factories.api_key(
        environment_id=tenant.environment_id,
        created_by_id=tenant.user_id,
        scopes=[Scope.VIEW_ANALYTICS, Scope.GENERATE_DOCUMENTS, Scope.MANAGE_PROJECT],
    )

    # when: documents is allowed by GENERATE_DOCUMENTS (listed first) or VIEW_ANALYTICS
    variables = {"e": tenant.environment_id}
    before = clock()
    (await execute(app, DOCUMENTS, variables, credential=key.secret)).ok()
    after = clock()
    pending = await _scopes(app, tenant.token, key.id)
    await services.usage.flush()
    flushed = await _scopes(app, tenant.token, key.id)

    # then
    for found in (pending, flushed):
        [use] = found["scopesUsed"]
        assert use["scope"] == "GENERATE_DOCUMENTS"
        assert before <= datetime.fromisoformat(use["lastUsedAt"]) <= after
        assert found["unusedScopes"] == ["MANAGE_PROJECT", "VIEW_ANALYTICS"]
    assert pending == flushed
    assert await ApiKeyScopeUse.filter(key_id=key.id).count() == 1


async def test_a_refused_field_records_no_use(app: Starlette) -> None:
    # given
    services: Services = app.state.services
    tenant = await factories.tenant(app)
    key = await factories.api_key(
        environment_id=tenant.environment_id,
        created_by_id=tenant.user_id,
        scopes=[Scope.VIEW_ANALYTICS],
    )

    # when
    refused = await execute(app, TEMPLATES, {"e": tenant.environment_id}, credential=key.secret)
    await services.usage.flush()

    # then
    assert refused.codes == ["FORBIDDEN"]
    assert refused.errors[0]["extensions"]["requiredScopes"] == [
        "GENERATE_DOCUMENTS",
        "MANAGE_TEMPLATES",
    ]
    assert (await _scopes(app, tenant.token, key.id))["scopesUsed"] == []


async def test_a_scope_unused_for_30_days_is_listed_again(app: Starlette, clock: Clock) -> None:
    # given: uses flushed long ago
    tenant = await factories.tenant(app)
    key = await factories.api_key(
        environment_id=tenant.environment_id,
        created_by_id=tenant.user_id,
        scopes=[Scope.VIEW_ANALYTICS, Scope.GENERATE_DOCUMENTS],
    )
    for scope, days in ((Scope.VIEW_ANALYTICS, 29), (Scope.GENERATE_DOCUMENTS, 31)):
        await ApiKeyScopeUse.create(
            key_id=key.id, scope=scope.value, last_used_at=clock() - timedelta(days=days)
        )

    # when
    found = await _scopes(app, tenant.token, key.id)

    # then
    assert [use["scope"] for use in found["scopesUsed"]] == [
        "GENERATE_DOCUMENTS",
        "VIEW_ANALYTICS",
    ]
    assert found["unusedScopes"] == ["GENERATE_DOCUMENTS"]


async def test_the_flush_skips_uses_of_a_key_deleted_meanwhile(app: Starlette) -> None:
    # given
    services: Services = app.state.services
    tenant = await factories.tenant(app)
    key = await factories.api_key(
        environment_id=tenant.environment_id,
        created_by_id=tenant.user_id,
        scopes=[Scope.VIEW_ANALYTICS],
    )
    (await execute(app, DOCUMENTS, {"e": tenant.environment_id}, credential=key.secret)).ok()

    # when
    await key.row.delete()
    await services.usage.flush()

    # then
    assert await ApiKeyScopeUse.all().count() == 0
