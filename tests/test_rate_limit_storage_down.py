"""Rate limits over HTTP: what happens when the rate-limit storage is down."""

from __future__ import annotations

import dataclasses

import pytest

from keyplane.auth.api_key import generate_secret
from keyplane.settings import Settings
from tests.helpers import Api, new_tenant
from tests.rate_limit_helpers import (
    UNREACHABLE_REDIS,
    VIEWER_KIND,
    new_key,
    rate_limits,  # noqa: F401  (a fixture: the real default tiers)
    spend,
    statuses,
)

# --- when the rate-limit storage is down ---------------------------------------------------


class TestWithTheStorageDown:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, rate_limit_storage=UNREACHABLE_REDIS)

    async def test_requests_still_succeed_and_health_counts_the_failures(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)
        _, secret = await new_key(api, tenant)

        # when
        results = await spend(api, 3, token=secret)
        health = await api.client.get("/healthz")
        ready = await api.client.get("/readyz")

        # then
        assert statuses(results) == {200}
        assert health.status_code == 200
        assert health.json()["rateLimitStorageFailures"] > 0
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "database": "ok",
            "rateLimitStorage": "unavailable (failing open)",
        }


class TestWithTheStorageDownFailingClosed:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(
            settings, rate_limit_storage=UNREACHABLE_REDIS, rate_limit_fail_closed=True
        )

    async def test_requests_get_503_with_retry_after(self, api: Api) -> None:
        # when
        query = await api.gql(VIEWER_KIND)
        refused_credentials = await api.gql(VIEWER_KIND, token=generate_secret())
        health = await api.client.get("/healthz")
        ready = await api.client.get("/readyz")

        # then
        for result in (query, refused_credentials):
            assert result.status == 503
            assert int(result.headers["Retry-After"]) >= 1
            assert result.data is None
            assert result.codes == ["SERVICE_UNAVAILABLE"]
        assert health.status_code == 200
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "database": "ok",
            "rateLimitStorage": "unavailable",
        }
