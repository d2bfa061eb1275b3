"""Records: the rows every authenticated request reads (keys, members, sessions, users,
environments), as plain SQL, and the record types resolvers and GraphQL types share.

Measured on SQLite, one lookup through the ORM costs ~200 µs and the same query as raw SQL on
the same connection ~35 µs (STACK_NOTES). Only users and environments are kept here
(RecordLoaders, below); the authenticator keeps what it read only under the credentials' version
(auth/changes.py, auth/verified.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tortoise import connections

from keyplane.db import database_fault, placeholder
from keyplane.errors import ServiceUnavailable
from keyplane.models.api_key import ApiKeyStatus
from keyplane.permissions.checks import KeyRestrictions, parse_restrictions
from keyplane.permissions.scopes import ROLE_SCOPES, Role, Scope, decode_scopes

R = TypeVar("R")

KEY_FIELDS = (
    "id",
    "environment_id",
    "project_id",
    "name",
    "prefix",
    "scopes",
    "created_by_id",
    "created_at",
    "expires_at",
    "revoked_at",
    "rate_limit_per_minute",
    "allowed_cidrs",
    "allowed_origins",
    "extra_scopes",
)
KEY_COLUMNS = ", ".join(KEY_FIELDS)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An api_key row as authentication read it (the GraphQL ApiKey type accepts it too),
    without its usage counters: those change with every request (usage/counters.py)."""

    id: str
    environment_id: str
    project_id: str
    name: str
    prefix: str
    scopes: str
    created_by_id: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rate_limit_per_minute: int | None
    # Restrictions beyond the scopes, as stored (permissions/checks/): part of the kept
    # credential, so that a change (through VerifiedCredentials.change()) reaches every worker.
    allowed_cidrs: str = ""
    allowed_origins: str = ""
    extra_scopes: str = ""

    @property
    def scope_set(self) -> frozenset[Scope]:
        return decode_scopes(self.scopes)

    @property
    def restrictions(self) -> KeyRestrictions:
        return parse_restrictions(self.allowed_cidrs, self.allowed_origins, self.extra_scopes)


@dataclass(frozen=True, slots=True)
class KeyCounters:
    """An API key's usage counters (as stored, or with unflushed counts: usage/counters.py)."""

    total_requests: int
    last_used_at: datetime | None


def key_counters(row: dict[str, Any]) -> KeyCounters:
    return KeyCounters(int(row["total_requests"]), instant(row["last_used_at"]))


def key_record(row: dict[str, Any]) -> KeyRecord:
    """A KeyRecord from a row of KEY_FIELDS (raw SQL or a Tortoise values() query)."""
    return KeyRecord(
        id=row["id"],
        environment_id=row["environment_id"],
        project_id=row["project_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=row["scopes"],
        created_by_id=row["created_by_id"],
        created_at=_required_instant(row["created_at"]),
        expires_at=instant(row["expires_at"]),
        revoked_at=instant(row["revoked_at"]),
        rate_limit_per_minute=row["rate_limit_per_minute"],
        allowed_cidrs=row["allowed_cidrs"] or "",
        allowed_origins=row["allowed_origins"] or "",
        extra_scopes=row["extra_scopes"] or "",
    )


def instant(value: Any) -> datetime | None:
    # asyncpg returns datetimes; SQLite returns the text Tortoise stored (ISO 8601, UTC).
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


class Lookups:
    def __init__(self, database_url: str) -> None:
        self._p = placeholder(database_url)

    async def _rows(self, sql: str, values: list[Any]) -> list[dict[str, Any]]:
        try:
            rows: list[dict[str, Any]] = await connections.get("default").execute_query_dict(
                sql, values
            )
        except Exception as exc:
            if database_fault(exc):
                raise ServiceUnavailable() from exc
            raise
        return rows

    async def by_ids(self, table: str, columns: str, ids: list[str]) -> list[dict[str, Any]]:
        """Rows of `table` (a trusted constant) whose id is in `ids`."""
        marks = ", ".join(self._p(n) for n in range(1, len(ids) + 1))
        return await self._rows(f"SELECT {columns} FROM {table} WHERE id IN ({marks})", ids)

    async def key_by_hash(self, secret_hash: str) -> KeyRecord | None:
        rows = await self._rows(
            f"SELECT {KEY_COLUMNS} FROM api_key WHERE secret_hash = {self._p(1)}", [secret_hash]
        )
        return key_record(rows[0]) if rows else None

    async def live_session(self, *, session_id: str, user_id: str) -> datetime | None:
        """When the session expires, if it has not been ended; None if it has (or never was)."""
        p = self._p
        rows = await self._rows(
            f"SELECT expires_at FROM session WHERE id = {p(1)} AND user_id = {p(2)} "
            "AND ended_at IS NULL",
            [session_id, user_id],
        )
        return instant(rows[0]["expires_at"]) if rows else None

    async def member(self, *, project_id: str, user_id: str) -> MemberRecord | None:
        """A user's membership of a project and, when it is limited to some environments,
        which: one query (a member reaching them all has no grant rows that count)."""
        p = self._p
        rows = await self._rows(
            "SELECT m.id, m.role, m.all_environments, g.environment_id FROM member m "
            "LEFT JOIN member_environment g ON g.member_id = m.id "
            f"WHERE m.project_id = {p(1)} AND m.user_id = {p(2)}",
            [project_id, user_id],
        )
        if not rows:
            return None
        first = rows[0]
        all_environments = bool(first["all_environments"])
        granted = () if all_environments else (row["environment_id"] for row in rows)
        return MemberRecord(
            id=first["id"],
            role=first["role"],
            all_environments=all_environments,
            environment_ids=frozenset(e for e in granted if e is not None),
        )

    async def key_page(
        self,
        environment_id: str,
        *,
        status: ApiKeyStatus | None,
        now: datetime,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[tuple[KeyRecord, KeyCounters]]:
        """Up to `limit` keys of an environment, newest first (created_at, then id), after the
        cursor's (created_at, id) when given, with their stored counters. Plain SQL: building
        this through the ORM cost more than running it (bench/run.py, list scenarios)."""
        p = self._p
        values: list[Any] = [environment_id]
        where = [f"environment_id = {p(1)}"]

        def param(value: Any) -> str:
            values.append(value)
            return p(len(values))

        if status is ApiKeyStatus.REVOKED:
            where.append("revoked_at IS NOT NULL")
        elif status is ApiKeyStatus.EXPIRED:
            where.append(f"revoked_at IS NULL AND expires_at <= {param(now)}")
        elif status is ApiKeyStatus.ACTIVE:
            later = param(now)
            where.append(f"revoked_at IS NULL AND (expires_at IS NULL OR expires_at > {later})")
        if after is not None:
            moment, row_id = after
            before, tied, lower = param(moment), param(moment), param(row_id)  # `?` is positional
            # `created_at <= m AND (created_at < m OR id < i)`, not the same rule written
            # `created_at < m OR (created_at = m AND id < i)`: SQLite takes a bound on the
            # (environment_id, created_at) index only outside an OR; without one it walks every
            # newer key of the environment (a page deep in 100,000 keys: 31 ms, not 0.06 ms).
            where.append(f"created_at <= {before} AND (created_at < {tied} OR id < {lower})")
        rows = await self._rows(
            f"SELECT {KEY_COLUMNS}, total_requests, last_used_at FROM api_key "
            f"WHERE {' AND '.join(where)} "
            f"ORDER BY created_at DESC, id DESC LIMIT {int(limit)}",
            values,
        )
        return [(key_record(row), key_counters(row)) for row in rows]

    async def linked_user(self, *, issuer: str, subject: str) -> str | None:
        p = self._p
        rows = await self._rows(
            f"SELECT user_id FROM oauth_identity WHERE issuer = {p(1)} AND subject = {p(2)}",
            [issuer, subject],
        )
        return str(rows[0]["user_id"]) if rows else None


@dataclass(frozen=True, slots=True)
class MemberRecord:
    id: str
    role: str
    all_environments: bool
    environment_ids: frozenset[str]

    def scopes_in(self, environment_id: str) -> frozenset[Scope]:
        """What the member's role grants in that environment: nothing where it does not reach."""
        if self.all_environments or environment_id in self.environment_ids:
            return ROLE_SCOPES[Role(self.role)]
        return frozenset()


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    email: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    id: str
    project_id: str
    name: str
    created_at: datetime


class RecordLoaders:
    """Batch reads behind the per-request DataLoaders (users, environments), as plain SQL.

    Users and environments are never updated or deleted (no operation does either), so a row
    read once stays true: it is kept, up to MAX_RECORDS of each, and later pages and viewers
    name it without a query. An operation that renames or deletes either must drop this.
    """

    def __init__(self, lookups: Lookups) -> None:
        self.lookups = lookups  # what is never kept (memberships, key pages) is read here
        self._users: dict[str, UserRecord] = {}
        self._environments: dict[str, EnvironmentRecord] = {}

    def known_user(self, user_id: str) -> UserRecord | None:
        return self._users.get(user_id)

    def known_environment(self, environment_id: str) -> EnvironmentRecord | None:
        return self._environments.get(environment_id)

    async def users(self, ids: list[str]) -> list[UserRecord | None]:
        return await self._read(
            self._users,
            '"user"',
            "id, email, name, created_at",
            ids,
            lambda row: UserRecord(
                id=row["id"],
                email=row["email"],
                name=row["name"],
                created_at=_required_instant(row["created_at"]),
            ),
        )

    async def environments(self, ids: list[str]) -> list[EnvironmentRecord | None]:
        return await self._read(
            self._environments,
            "environment",
            "id, project_id, name, created_at",
            ids,
            lambda row: EnvironmentRecord(
                id=row["id"],
                project_id=row["project_id"],
                name=row["name"],
                created_at=_required_instant(row["created_at"]),
            ),
        )

    async def _read(
        self,
        kept: dict[str, R],
        table: str,
        columns: str,
        ids: list[str],
        record: Callable[[dict[str, Any]], R],
    ) -> list[R | None]:
        """The records named by `ids`, reading only those not kept yet (and keeping them)."""
        missing = [i for i in ids if i not in kept]
        if missing:
            for row in await self.lookups.by_ids(table, columns, missing):
                if len(kept) >= MAX_RECORDS:
                    del kept[next(iter(kept))]  # the oldest insertion
                kept[row["id"]] = record(row)
        return [kept.get(i) for i in ids]


MAX_RECORDS = 10_000


def _required_instant(value: Any) -> datetime:
    moment = instant(value)
    assert moment is not None
    return moment
