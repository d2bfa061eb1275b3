"""Database configuration and start-up migrations, applied once under a lock."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.migrations.api import migrate

APP_LABEL = "keyplane"
MODELS_MODULE = "keyplane.models"
MIGRATIONS_MODULE = "keyplane.migrations"
# pg_advisory_lock key: a stable 63-bit number derived from the project's name.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"keyplane-migrate").digest()[:8], "big") >> 1


def tortoise_config(database_url: str) -> dict[str, Any]:
    return {
        "connections": {"default": database_url},
        "apps": {
            APP_LABEL: {
                "models": [MODELS_MODULE],
                "migrations": MIGRATIONS_MODULE,
                "default_connection": "default",
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


# Read by Tortoise's own console script (`tortoise makemigrations`), see pyproject.toml.
MIGRATIONS_CONFIG = tortoise_config("sqlite://:memory:")


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "asyncpg://"))


def placeholder(database_url: str) -> Callable[[int], str]:
    """The driver's n-th query parameter: `$n` for asyncpg, `?` for SQLite."""
    if is_postgres(database_url):
        return lambda n: f"${n}"
    return lambda n: "?"


def sqlite_path(database_url: str) -> Path | None:
    path = database_url.removeprefix("sqlite://").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


async def apply_migrations(database_url: str) -> None:
    """Bring the schema up to date; safe when several processes or hosts start together."""
    async with _migration_lock(database_url):
        try:
            await migrate(config=tortoise_config(database_url))
        finally:
            await Tortoise.close_connections()


def apply_migrations_sync(database_url: str) -> None:
    asyncio.run(apply_migrations(database_url))


@contextlib.asynccontextmanager
async def _migration_lock(database_url: str) -> AsyncIterator[None]:
    if is_postgres(database_url):
        import asyncpg  # type: ignore[import-untyped]

        dsn = "postgres://" + database_url.split("://", 1)[1]
        dsn = dsn.split("?", 1)[0]
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute("SELECT pg_advisory_lock($1)", _PG_LOCK_KEY)
            yield
        finally:
            with contextlib.suppress(Exception):
                await connection.execute("SELECT pg_advisory_unlock($1)", _PG_LOCK_KEY)
            await connection.close()
        return
    path = sqlite_path(database_url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(path.with_name(path.name + ".migrate-lock")):
        yield


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
