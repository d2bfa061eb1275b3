"""The activity log: security-relevant events, per environment (or project-wide)."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id
from keyplane.models.project import Environment, Project


class ActivityKind(StrEnum):
    KEY_CREATED = "KEY_CREATED"
    KEY_UPDATED = "KEY_UPDATED"
    KEY_ROTATED = "KEY_ROTATED"
    KEY_REVOKED = "KEY_REVOKED"
    KEY_DELETED = "KEY_DELETED"
    AUTH_FAILED = "AUTH_FAILED"
    RATE_LIMITED = "RATE_LIMITED"
    KEY_IP_DENIED = "KEY_IP_DENIED"
    MEMBER_INVITED = "MEMBER_INVITED"
    MEMBER_UPDATED = "MEMBER_UPDATED"
    MEMBER_REMOVED = "MEMBER_REMOVED"
    TEMPLATE_PUBLISHED = "TEMPLATE_PUBLISHED"
    DOCUMENT_FAILED = "DOCUMENT_FAILED"


def _event_id() -> str:
    return new_id("evt")


class ActivityEvent(Model):
    # environment is null for project-wide events (members): every environment shows those.
    id = fields.CharField(primary_key=True, max_length=32, default=_event_id)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "keyplane.Project", related_name="activity", on_delete=fields.CASCADE
    )
    environment: fields.ForeignKeyNullableRelation[Environment] = fields.ForeignKeyField(
        "keyplane.Environment", related_name="activity", on_delete=fields.CASCADE, null=True
    )
    kind = fields.CharEnumField(ActivityKind, max_length=32)
    at = fields.DatetimeField()
    actor = fields.CharField(max_length=255)
    target = fields.CharField(max_length=255)
    ip = fields.CharField(max_length=64, null=True)
    # Aggregated kinds (AUTH_FAILED, RATE_LIMITED, KEY_IP_DENIED) keep one row per key and minute.
    count = fields.IntField(default=1)
    aggregate_key = fields.CharField(max_length=128, null=True, unique=True)

    class Meta:
        table = "activity_event"
        indexes = (("environment_id", "at"), ("project_id", "at"))
