"""Templates and their frozen published versions."""

from __future__ import annotations

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id
from keyplane.models.project import Environment, Project
from keyplane.models.user import User


class TemplateFormat(StrEnum):
    HTML = "HTML"
    MARKDOWN = "MARKDOWN"
    TEXT = "TEXT"


def _template_id() -> str:
    return new_id("tpl")


def _version_id() -> str:
    return new_id("tpv")


class Template(Model):
    # `content` is the draft; publishing freezes it as the next numbered TemplateVersion.
    id = fields.CharField(primary_key=True, max_length=32, default=_template_id)
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "keyplane.Environment", related_name="templates", on_delete=fields.CASCADE
    )
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "keyplane.Project", related_name="templates", on_delete=fields.CASCADE
    )
    name = fields.CharField(max_length=64)
    format = fields.CharEnumField(TemplateFormat, max_length=16)
    content = fields.TextField()
    latest_version = fields.IntField(default=0)
    published_version = fields.IntField(null=True)
    # The draft differs from the latest frozen version (or none exists yet): publishing would
    # freeze a new version. Kept with every write so that reads need no version lookup.
    has_unpublished_changes = fields.BooleanField(default=True)
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="created_templates", on_delete=fields.RESTRICT
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "template"
        unique_together = (("environment", "name"),)


class TemplateVersion(Model):
    id = fields.CharField(primary_key=True, max_length=32, default=_version_id)
    template: fields.ForeignKeyRelation[Template] = fields.ForeignKeyField(
        "keyplane.Template", related_name="versions", on_delete=fields.CASCADE
    )
    version = fields.IntField()
    content = fields.TextField()
    published_at = fields.DatetimeField(auto_now_add=True)
    published_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="published_versions", on_delete=fields.RESTRICT
    )

    class Meta:
        table = "template_version"
        unique_together = (("template", "version"),)
