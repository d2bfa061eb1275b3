"""Idempotency keys: which earlier call a retried mutation stands for.

One row per (principal, operation, key), written in the mutation's own transaction before its
work, so that the database decides which of two concurrent identical calls does the work: the
second waits on the unique index (PostgreSQL) or the write lock (SQLite) and, once the first has
committed, finds its row. A call that fails rolls back its row with its work. The row holds the
request's hash and the id of what the first call made, never a secret.
"""

from __future__ import annotations

from datetime import timedelta

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id

# How long a key replays its first call; older rows are ignored, then pruned (usage/buffer.py).
REPLAY_WINDOW = timedelta(hours=24)


def _idempotency_id() -> str:
    return new_id("idem")


class IdempotentRequest(Model):
    id = fields.CharField(primary_key=True, max_length=32, default=_idempotency_id)
    # Who called: the AuthKind and the user id or key id it authenticated as.
    principal_kind = fields.CharField(max_length=16)
    principal_id = fields.CharField(max_length=32)
    operation = fields.CharField(max_length=32)
    key = fields.CharField(max_length=255)
    # SHA-256 of the call's canonical arguments, idempotency key left out.
    request_hash = fields.CharField(max_length=64)
    # The id of what the first call made; set before its transaction commits.
    result_id = fields.CharField(max_length=32, null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "idempotency"
        unique_together = (("principal_kind", "principal_id", "operation", "key"),)
        indexes = (("created_at",),)
