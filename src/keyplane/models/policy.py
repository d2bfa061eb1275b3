"""An environment's key policy: what every key issued there must respect."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from keyplane.models.project import Environment


class EnvironmentPolicy(Model):
    """One row per environment that has a policy (no row: no rule at all).

    Kept apart from `environment` so that the environment records kept per process
    (records.py) never change."""

    id = fields.IntField(primary_key=True)
    environment: fields.OneToOneRelation[Environment] = fields.OneToOneField(
        "keyplane.Environment", related_name="policy", on_delete=fields.CASCADE
    )
    require_expiry = fields.BooleanField(default=False)
    max_lifetime_days = fields.IntField(null=True)
    # Comma-separated scope names (built-in and plugin ones); empty: any scope.
    allowed_scopes = fields.CharField(max_length=1024, default="")

    class Meta:
        table = "environment_policy"
