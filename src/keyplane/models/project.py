"""Projects and their environments."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id
from keyplane.models.user import User


def _project_id() -> str:
    return new_id("prj")


def _environment_id() -> str:
    return new_id("env")


class Project(Model):
    id = fields.CharField(primary_key=True, max_length=32, default=_project_id)
    name = fields.CharField(max_length=64)
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="created_projects", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "project"
        # A project's "parent" is the user who created it: names are unique per creator.
        unique_together = (("created_by", "name"),)


class Environment(Model):
    id = fields.CharField(primary_key=True, max_length=32, default=_environment_id)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "keyplane.Project", related_name="environments", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=64)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "environment"
        unique_together = (("project", "name"),)
