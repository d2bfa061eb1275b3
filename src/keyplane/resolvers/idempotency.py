"""Idempotent retries: a mutation retried with the same idempotency key does its work once.

The same principal, sending the same idempotency key with the same input within 24 hours, gets
the first call's result back (`replay`), and nothing is done again; the same key with another
input is a CONFLICT. The database decides, so that replays are exact across workers and servers:
`once` writes the key's row in the mutation's own transaction before the work, so a concurrent
identical call waits on the unique index (PostgreSQL) or the write lock (SQLite) and, once the
first has committed, finds the row and replays. A call that fails rolls its row back with its
work, and a retry then does the work.

Only the id of what the first call made is kept: never a secret, so a replayed createApiKey,
rotateApiKey or inviteMember answers without it (the caller knows the key or invitation exists
and can rotate or re-issue it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from keyplane.access import Access
from keyplane.errors import BadUserInput, Conflict
from keyplane.models import IdempotentRequest
from keyplane.models.idempotency import REPLAY_WINDOW

T = TypeVar("T")

MAX_KEY_LENGTH = 255
FIELD = "idempotencyKey"


@dataclass(frozen=True, slots=True)
class Retry:
    """A call that named an idempotency key: who, which operation, which key, which input."""

    principal_kind: str
    principal_id: str
    operation: str
    key: str
    request_hash: str

    def identity(self) -> dict[str, str]:
        return {
            "principal_kind": self.principal_kind,
            "principal_id": self.principal_id,
            "operation": self.operation,
            "key": self.key,
        }


def retry_of(
    access: Access, operation: str, idempotency_key: str | None, **arguments: Any
) -> Retry | None:
    """The call's Retry when it names an idempotency key (1 to 255 characters), else None.

    `arguments` are the operation's input, idempotency key left out; they are hashed, not kept."""
    if idempotency_key is None:
        return None
    if not 1 <= len(idempotency_key) <= MAX_KEY_LENGTH:
        raise BadUserInput(f"{FIELD} must be 1 to {MAX_KEY_LENGTH} characters.", field=FIELD)
    principal = access.require_authenticated()
    # A key is its own principal (it may rotate away); a person is the same user however
    # signed in, but a dashboard session and an OAuth client are told apart by their kind.
    principal_id = principal.key.key_id if principal.key is not None else principal.user_id
    assert principal_id is not None  # an authenticated principal is a key or a user
    return Retry(
        principal_kind=principal.kind.value,
        principal_id=principal_id,
        operation=operation,
        key=idempotency_key,
        request_hash=fingerprint(arguments),
    )


def fingerprint(arguments: dict[str, Any]) -> str:
    """SHA-256 of the arguments as canonical JSON (sorted keys, instants in UTC)."""
    text = json.dumps(
        arguments, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_canonical
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"cannot fingerprint {type(value).__name__}")


async def earlier(retry: Retry | None, *, now: datetime) -> str | None:
    """The id of what an earlier identical call made, or None when this call is the first;
    CONFLICT when the key was used with another input."""
    if retry is None:
        return None
    row = await IdempotentRequest.filter(
        **retry.identity(), created_at__gt=now - REPLAY_WINDOW
    ).first()
    if row is None:
        return None
    if not hmac.compare_digest(row.request_hash, retry.request_hash):
        raise Conflict(
            f"This {FIELD} was used with a different input; use a new key for a new request."
        )
    if row.result_id is None:  # the first call's transaction has not committed its result
        raise Conflict(f"A request with this {FIELD} is still in progress; retry shortly.")
    return row.result_id


class _Taken(Exception):
    """Another call with the same key committed first: this transaction rolls back."""


async def _claim(retry: Retry, *, now: datetime) -> None:
    identity = retry.identity()
    # A row past the window no longer counts: it gives way to this call.
    await IdempotentRequest.filter(**identity, created_at__lte=now - REPLAY_WINDOW).delete()
    try:
        await IdempotentRequest.create(
            principal_kind=retry.principal_kind,
            principal_id=retry.principal_id,
            operation=retry.operation,
            key=retry.key,
            request_hash=retry.request_hash,
            created_at=now,
        )
    except IntegrityError:
        raise _Taken() from None


async def once(
    retry: Retry | None,
    *,
    now: datetime,
    work: Callable[[], Awaitable[T]],
    made: Callable[[T], str],
    replay: Callable[[str], Awaitable[T]],
    transaction: Callable[[], AbstractAsyncContextManager[object]] = in_transaction,
) -> T:
    """`work()` in one transaction (`transaction()`), which also claims the idempotency key;
    when an identical call claimed it first, `replay(id of what that call made)` instead.

    Resolvers call `earlier` first, before any check of state that the first call changed."""
    if retry is None:
        async with transaction():
            return await work()
    try:
        async with transaction():
            await _claim(retry, now=now)
            result = await work()
            await IdempotentRequest.filter(**retry.identity()).update(result_id=made(result))
    except _Taken:
        made_before = await earlier(retry, now=now)
        if made_before is None:  # the row expired or was pruned in between
            raise Conflict(f"This {FIELD} was just used; retry shortly.") from None
        return await replay(made_before)
    return result


def gone() -> Conflict:
    """What the first call made was deleted since: there is nothing to replay."""
    return Conflict(f"What the first request with this {FIELD} made no longer exists.")
