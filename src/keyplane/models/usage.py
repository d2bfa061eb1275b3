"""Per-key, per-minute usage counts. Keys are referenced by id without a foreign key, so an
environment's history survives the deletion of a key."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


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
