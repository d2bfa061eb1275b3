"""API keys: stored as a SHA-256 hash plus a displayable prefix, never as the secret."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id
from keyplane.models.project import Environment, Project
from keyplane.models.user import User
from keyplane.permissions.scopes import Scope, decode_scopes


def _api_key_id() -> str:
    return new_id("key")


class ApiKey(Model):
    id = fields.CharField(primary_key=True, max_length=32, default=_api_key_id)
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "keyplane.Environment", related_name="api_keys", on_delete=fields.CASCADE
    )
    # Denormalised from the environment so that authorisation needs no join.
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "keyplane.Project", related_name="api_keys", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=64)
    prefix = fields.CharField(max_length=16)
    secret_hash = fields.CharField(max_length=64, unique=True)
    scopes = fields.CharField(max_length=128)
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="created_api_keys", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField(null=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)
    total_requests = fields.BigIntField(default=0)
    # Overrides the API-key tier's per-minute limit for this key when set (1 to 10,000).
    rate_limit_per_minute = fields.IntField(null=True)
    # The key this one replaced (rotateApiKey); unique, so a key has at most one replacement.
    rotated_from: fields.OneToOneNullableRelation[ApiKey] = fields.OneToOneField(
        "keyplane.ApiKey", related_name="replaced_by", on_delete=fields.SET_NULL, null=True
    )
    # When this key was rotated. Kept after its replacement is deleted (which clears the link
    # above): its expiry is then the overlap, and never again a lifetime to copy.
    rotated_at = fields.DatetimeField(null=True)
    # Restrictions beyond the scopes (permissions/checks/): comma-separated CIDRs, origins
    # and plugin scope names; empty or null means unrestricted (CIDRs, origins) or none.
    allowed_cidrs = fields.TextField(null=True)
    allowed_origins = fields.TextField(null=True)
    extra_scopes = fields.CharField(max_length=1024, null=True)

    class Meta:
        table = "api_key"
        indexes = (("environment_id", "created_at"),)

    @property
    def scope_set(self) -> frozenset[Scope]:
        return decode_scopes(self.scopes)


class ApiKeyStatus(StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class _Lifetime(Protocol):
    @property
    def revoked_at(self) -> datetime | None: ...

    @property
    def expires_at(self) -> datetime | None: ...


def status_of(key: _Lifetime, now: datetime) -> ApiKeyStatus:
    if key.revoked_at is not None:
        return ApiKeyStatus.REVOKED
    if key.expires_at is not None and key.expires_at <= now:
        return ApiKeyStatus.EXPIRED
    return ApiKeyStatus.ACTIVE
