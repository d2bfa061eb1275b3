"""Database configuration and start-up migrations, applied once under a lock.

Every file keyplane keeps beside a SQLite database (the database, its -wal and -shm files, the
migration lock, the credentials' version) is created readable and writable by its owner only:
they hold key hashes, password hashes and sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import math
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.exceptions import DBConnectionError
from tortoise.exceptions import OperationalError as TortoiseOperationalError
from tortoise.migrations.api import migrate

APP_LABEL = "keyplane"
MODELS_MODULE = "keyplane.models"
MIGRATIONS_MODULE = "keyplane.migrations"
# pg_advisory_lock key: a stable 63-bit number derived from the project's name.
_PG_LOCK_KEY = int.from_bytes(hashlib.sha256(b"keyplane-migrate").digest()[:8], "big") >> 1

# How long a request may wait on the database before it is answered 503 (a locked SQLite file,
# a PostgreSQL server that does not answer). SQLite queues a request behind the one connection
# it has, so a request can wait for the connection and then for the lock: two waits of this
# length stay within the 5 s that a request may spend waiting.
DATABASE_WAIT_SECONDS = 2.5
# What SQLite says when the file is locked or cannot be reached (never the caller's fault).
_SQLITE_FAULTS = ("locked", "busy", "unable to open", "disk i/o error")
_UNAVAILABLE = (
    DBConnectionError,
    OSError,  # ConnectionRefusedError and friends, while connecting
    TimeoutError,  # the bounded waits: connecting, a command, asyncio.timeout
    asyncpg.PostgresConnectionError,  # the connection failed or was closed under us
    asyncpg.InterfaceError,  # "connection is closed", "pool is closing"
    asyncpg.OperatorInterventionError,  # shutting down, starting up, query cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
)


def is_postgres(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "asyncpg://"))


def tortoise_config(
    database_url: str, *, command_timeout: float | None = DATABASE_WAIT_SECONDS
) -> dict[str, Any]:
    """The ORM's configuration, with every wait on the database bounded unless the URL says
    otherwise (`command_timeout=None` for migrations, which may run long on big tables)."""
    connection = expand_db_url(database_url)
    credentials = connection["credentials"]
    if is_postgres(database_url):
        credentials.setdefault("timeout", math.ceil(DATABASE_WAIT_SECONDS))  # connecting
        if command_timeout is not None:
            credentials.setdefault("command_timeout", command_timeout)
    else:
        credentials.setdefault("busy_timeout", int(DATABASE_WAIT_SECONDS * 1000))  # PRAGMA, ms
    return {
        "connections": {"default": connection},
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
        _create_private_database(database_url)
        try:
            await migrate(config=tortoise_config(database_url, command_timeout=None))
        finally:
            await Tortoise.close_connections()


def database_fault(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, says the database is locked,
    unreachable or too slow: a passing condition, answered 503, never the caller's fault nor a
    bug. Driver errors are recognised here and nowhere else."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, _UNAVAILABLE):
            return True
        if isinstance(seen, sqlite3.OperationalError | TortoiseOperationalError):
            message = str(seen).lower()
            if any(fault in message for fault in _SQLITE_FAULTS):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


def apply_migrations_sync(database_url: str) -> None:
    asyncio.run(apply_migrations(database_url))


@contextlib.asynccontextmanager
async def _migration_lock(database_url: str) -> AsyncIterator[None]:
    if is_postgres(database_url):
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


PRIVATE_FILE_MODE = 0o600


def _create_private_database(database_url: str) -> None:
    """Create a missing SQLite database as an empty file (SQLite takes it for a new database)
    with PRIVATE_FILE_MODE, before SQLite first opens it: SQLite gives the -wal and -shm files
    it creates later the database file's permissions."""
    path = None if is_postgres(database_url) else sqlite_path(database_url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return  # its owner chose its permissions; they are left as they are
    os.close(fd)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
