"""Many keys written straight into a SQLite database, in one transaction (not through GraphQL).

`createApiKey` costs milliseconds a key; a million keys through it would take an hour. Here
rows go in with `executemany`, in one transaction, in batches: about 10 s for a million. Keys
the bench sends get a real secret (stored, as createApiKey stores it, as its SHA-256 hash and
its display prefix); the others get a unique placeholder hash that no secret has (64 hex
digits counted from a random start), which costs nothing to make and fills the same indexes.

The database must exist and be migrated (a `keyplane serve` that started on it once), and
hold the environment and the user the keys name (bench/seed.py makes them).
"""

from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from keyplane.auth.api_key import display_prefix, generate_secret, hash_secret
from keyplane.permissions.scopes import Scope, encode_scopes

BATCH = 50_000
COLUMNS = (
    "id, environment_id, project_id, name, prefix, secret_hash, scopes, created_by_id, "
    "created_at, total_requests, rate_limit_per_minute"
)


@dataclass(frozen=True)
class Batch:
    """Keys of one environment: `usable` of them with secrets the bench keeps, then
    `count - usable` with placeholder hashes."""

    environment_id: str
    count: int
    usable: int = 0
    scopes: frozenset[Scope] = frozenset({Scope.GENERATE_DOCUMENTS, Scope.MANAGE_PROJECT})
    rate_limit_per_minute: int | None = None


def seed_many(
    database: Path, *, project_id: str, user_id: str, batches: list[Batch]
) -> tuple[dict[str, list[str]], float]:
    """Insert every batch; returns the usable secrets by environment id, and the seconds it
    took. Created-at instants are one microsecond apart, newest first, as in a real table."""
    started = time.perf_counter()
    found: dict[str, list[str]] = {}
    # Tortoise stores a datetime in SQLite as its ISO text (aware, UTC): the same form here
    # keeps ORDER BY created_at and the cursors' comparisons true across both kinds of row.
    now = datetime.now(UTC)
    start = int(secrets.token_hex(6), 16) << 64  # placeholder hashes: unique, never a SHA-256 seen
    serial = 0
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=OFF")
        connection.execute("BEGIN")
        for batch in batches:
            scopes = encode_scopes(batch.scopes)
            usable = [generate_secret() for _ in range(batch.usable)]
            found[batch.environment_id] = usable
            for first in range(0, batch.count, BATCH):
                rows = []
                for n in range(first, min(first + BATCH, batch.count)):
                    serial += 1
                    if n < batch.usable:
                        secret = usable[n]
                        prefix, secret_hash = display_prefix(secret), hash_secret(secret)
                    else:
                        prefix, secret_hash = "fm_seeded", f"{start + serial:064x}"
                    rows.append(
                        (
                            "key_" + secrets.token_hex(10),
                            batch.environment_id,
                            project_id,
                            f"seeded key {n}",
                            prefix,
                            secret_hash,
                            scopes,
                            user_id,
                            str(now - timedelta(microseconds=serial)),
                            0,
                            batch.rate_limit_per_minute,
                        )
                    )
                connection.executemany(
                    f"INSERT INTO api_key ({COLUMNS}) VALUES ({', '.join('?' * 11)})", rows
                )
        connection.execute("COMMIT")
    finally:
        connection.close()
    return found, time.perf_counter() - started
