"""Fixtures only: a migrated database per test, the app under its lifespan, an HTTP client.

Set KEYPLANE_TEST_DATABASE_URL=postgres://... to run the whole suite against PostgreSQL
(`.ci/run` does); by default each test gets its own SQLite file copied from a template that
was migrated once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from keyplane.app import create_app
from keyplane.auth.oauth import JwksCache
from keyplane.db import apply_migrations_sync
from keyplane.ratelimit.tiers import parse_tiers
from keyplane.render.limits import RenderLimits
from keyplane.settings import OAuthSettings, RunMode, Settings, SignupPolicy
from keyplane.usage.buffer import UsageBuffer
from tests.factories import FAST_PASSWORDS
from tests.helpers import Api, Clock, OAuthIssuer
from tests.schema_client import SchemaApi
from tests.serve_process import Servers, started_servers

PG_URL = os.environ.get("KEYPLANE_TEST_DATABASE_URL", "")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "keyplane.sqlite3"
    apply_migrations_sync(f"sqlite://{path}")
    return path


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> str:
    """The PostgreSQL test database; under pytest-xdist each worker gets its own copy."""
    url = PG_URL
    if worker_id != "master":
        url = asyncio.run(_fresh_database(PG_URL, worker_id))
    apply_migrations_sync(url)
    return url


async def _fresh_database(base_url: str, suffix: str) -> str:
    import asyncpg  # type: ignore[import-untyped]

    server, _, name = base_url.split("?", 1)[0].rpartition("/")
    database = f"{name}_{suffix}"
    connection = await asyncpg.connect(f"{server}/postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()
    return f"{server}/{database}"


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if PG_URL:
        url: str = request.getfixturevalue("postgres_url")
        return url
    template: Path = request.getfixturevalue("sqlite_template")
    path = tmp_path / "keyplane.sqlite3"
    shutil.copy(template, path)
    return f"sqlite://{path}"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def oauth_issuer(tmp_path: Path) -> OAuthIssuer:
    return OAuthIssuer.create(tmp_path / "jwks.json")


@pytest.fixture
def signup_policy() -> SignupPolicy:
    return SignupPolicy.OPEN


@pytest.fixture
def rate_limits() -> str:
    """Generous tiers, so that only the rate-limit tests (which override this) meet a limit."""
    return "api_key=5000/minute;oauth=5000/minute;jwt=5000/minute;anonymous=5000/minute"


@pytest.fixture
def render_workers() -> int:
    """One render child, not the default two: each app starts its own on its first render, and a
    fresh interpreter is the dearest part of most rendering tests. Tests of concurrent renders
    ask for more."""
    return 1


@pytest.fixture
def usage_flush_seconds(request: pytest.FixtureRequest) -> float:
    """The background usage flusher's interval: the setting's default, or what the test's (or
    its module's) `usage_flush_seconds` mark says. Usage tests slow it to once an hour, so that
    each decides when counts reach the database (`await usage.flush()`)."""
    mark = request.node.get_closest_marker("usage_flush_seconds")
    return Settings.usage_flush_seconds if mark is None else float(mark.args[0])


@pytest.fixture
def settings(
    database_url: str,
    tmp_path: Path,
    oauth_issuer: OAuthIssuer,
    signup_policy: SignupPolicy,
    rate_limits: str,
    render_workers: int,
    usage_flush_seconds: float,
) -> Settings:
    from starlette.datastructures import Secret

    return Settings(
        mode=RunMode.DEVELOPMENT,
        data_dir=tmp_path,
        database_url=database_url,
        jwt_secret=Secret("test-secret-" + "x" * 40),
        signup=signup_policy,
        rate_limits=parse_tiers(rate_limits, []),
        max_in_flight=10_000,  # tests fire hundreds of requests at once to test other limits
        max_queued=0,  # and expect them all to start (a queue's pacing is test_admission.py's)
        render=RenderLimits(workers=render_workers),
        usage_flush_seconds=usage_flush_seconds,
        oauth=OAuthSettings(
            issuer=oauth_issuer.issuer,
            audience=oauth_issuer.audience,
            jwks=str(oauth_issuer.jwks_path),
        ),
    )


@pytest.fixture
async def app(settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
    application = create_app(
        settings,
        passwords=FAST_PASSWORDS,
        jwks=JwksCache(str(settings.oauth.jwks)) if settings.oauth else None,
        clock=clock,
        migrate=False,
    )
    async with LifespanManager(application):
        if PG_URL:
            await _truncate_all()
        yield application


async def _truncate_all() -> None:
    from tortoise import connections

    from keyplane import models

    tables = [getattr(models, name)._meta.db_table for name in models.__all__]
    await connections.get("default").execute_script(
        "TRUNCATE TABLE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
    )


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as c:
        yield c


@pytest.fixture
def usage(app: Starlette) -> UsageBuffer:
    """The app's usage buffer, whose `flush()` writes the counts now."""
    buffer: UsageBuffer = app.state.services.usage
    return buffer


@pytest.fixture
def schema(app: Starlette, oauth_issuer: OAuthIssuer) -> SchemaApi:
    """GraphQL through the app's schema, without HTTP (tests/schema_client.py)."""
    return SchemaApi(app, oauth_issuer)


@pytest.fixture
def api(client: httpx.AsyncClient, oauth_issuer: OAuthIssuer) -> Api:
    return Api(client, oauth_issuer)


@pytest.fixture
async def sqlite_servers(tmp_path: Path) -> AsyncIterator[Servers]:
    """`keyplane serve` processes sharing a SQLite file in `tmp_path` (and Redis, when given)."""
    async for started in started_servers(tmp_path, ""):
        yield started
