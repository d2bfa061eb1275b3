"""Migrations: they describe the models exactly, and applying them is idempotent and safe."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

import pytest
from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector

from keyplane.db import MIGRATIONS_CONFIG, apply_migrations

MIGRATIONS_DIR = Path(__file__).parents[1] / "src" / "keyplane" / "migrations"


async def test_the_models_need_no_migration_that_is_not_committed() -> None:
    apps = {label: dict(app) for label, app in MIGRATIONS_CONFIG["apps"].items()}
    async with TortoiseContext() as ctx:
        await ctx.init(config=MIGRATIONS_CONFIG)
        assert ctx.apps is not None
        writers = await MigrationAutodetector(ctx.apps, apps).changes()
    assert [w.name for w in writers] == [], "models changed: run `tortoise makemigrations`"


@pytest.mark.slow
async def test_concurrent_starts_migrate_a_fresh_database_exactly_once(tmp_path: Path) -> None:
    # given
    url = f"sqlite://{tmp_path / 'fresh.sqlite3'}"

    # when: three processes start at once on one fresh database, then one more later
    processes = [
        await asyncio.create_subprocess_exec(sys.executable, "-m", "keyplane", "migrate", env=env)
        for env in [_env(url)] * 3
    ]
    codes = [await p.wait() for p in processes]
    await apply_migrations(url)

    # then
    assert codes == [0, 0, 0]

    with sqlite3.connect(tmp_path / "fresh.sqlite3") as db:
        applied = db.execute("SELECT app, name FROM tortoise_migrations").fetchall()
    committed = sorted(p.stem for p in MIGRATIONS_DIR.glob("[0-9]*.py"))
    assert applied == [("keyplane", name) for name in committed]


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "KEYPLANE_DATABASE_URL": url, "KEYPLANE_JWT_SECRET": "s" * 40}


async def test_a_database_of_the_first_release_upgrades_keeping_its_keys(tmp_path: Path) -> None:
    # given: a database at 0001 holding a user, a project, an environment and a key
    from tortoise import Tortoise
    from tortoise.migrations.api import migrate

    from keyplane.db import tortoise_config

    path = tmp_path / "old.sqlite3"
    url = f"sqlite://{path}"
    try:
        await migrate(config=tortoise_config(url), target="keyplane.0001_initial")
    finally:
        await Tortoise.close_connections()
    with sqlite3.connect(path) as db:
        db.executescript(
            """
            INSERT INTO user VALUES
                ('usr_1', 'a@example.com', 'A', 'h', '2026-01-01 00:00:00+00:00');
            INSERT INTO project VALUES ('prj_1', 'P', '2026-01-01 00:00:00+00:00', 'usr_1');
            INSERT INTO environment VALUES ('env_1', 'E', '2026-01-01 00:00:00+00:00', 'prj_1');
            INSERT INTO api_key (id, name, prefix, secret_hash, scopes, created_at,
                                 total_requests, created_by_id, environment_id, project_id)
            VALUES ('key_1', 'k', 'fm_12345678', 'h1', 'VIEW_ANALYTICS',
                    '2026-01-01 00:00:00+00:00', 7, 'usr_1', 'env_1', 'prj_1');
            """
        )

    # when
    await apply_migrations(url)

    # then
    with sqlite3.connect(path) as db:
        key = db.execute("SELECT id, total_requests, rate_limit_per_minute FROM api_key").fetchall()
        applied = db.execute("SELECT count(*) FROM tortoise_migrations").fetchone()
    assert key == [("key_1", 7, None)]
    assert applied == (len(list(MIGRATIONS_DIR.glob("[0-9]*.py"))),)
