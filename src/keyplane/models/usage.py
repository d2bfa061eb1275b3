"""Per-key, per-minute usage counts. Keys are referenced by id without a foreign key, so an
environment's history survives the deletion of a key."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from keyplane.models.api_key import ApiKey


class UsageBucket(Model):
    id = fields.BigIntField(primary_key=True)
    key_id = fields.CharField(max_length=32)
    environment_id = fields.CharField(max_length=32)
    minute = fields.DatetimeField()
    requests = fields.IntField(default=0)
    unauthorized = fields.IntField(default=0)
    forbidden = fields.IntField(default=0)
    rate_limited = fields.IntField(default=0)

    class Meta:
        table = "usage_bucket"
        unique_together = (("key_id", "minute"),)
        indexes = (("environment_id", "minute"),)


class ApiKeyScopeUse(Model):
    """When a key last used each scope: the scope that admitted a field (`Access.require`),
    written by the usage flush. Deleted with its key."""

    id = fields.BigIntField(primary_key=True)
    key: fields.ForeignKeyRelation[ApiKey] = fields.ForeignKeyField(
        "keyplane.ApiKey", related_name="scope_uses", on_delete=fields.CASCADE
    )
    scope = fields.CharField(max_length=64)
    last_used_at = fields.DatetimeField()

    class Meta:
        table = "api_key_scope_use"
        unique_together = (("key_id", "scope"),)
