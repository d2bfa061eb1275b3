"""Migrations: they describe the models exactly, and applying them is idempotent and safe."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from tortoise.context import TortoiseContext
from tortoise.migrations.autodetector import MigrationAutodetector

from keyplane.db import MIGRATIONS_CONFIG, apply_migrations


async def test_the_models_need_no_migration_that_is_not_committed() -> None:
    apps = {label: dict(app) for label, app in MIGRATIONS_CONFIG["apps"].items()}
    async with TortoiseContext() as ctx:
        await ctx.init(config=MIGRATIONS_CONFIG)
        assert ctx.apps is not None
        writers = await MigrationAutodetector(ctx.apps, apps).changes()
    assert [w.name for w in writers] == [], "models changed: run `tortoise makemigrations`"


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
    assert applied == [("keyplane", "0001_initial"), ("keyplane", "0002_usage_and_key_limits")]


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "KEYPLANE_DATABASE_URL": url, "KEYPLANE_JWT_SECRET": "s" * 40}
