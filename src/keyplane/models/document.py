"""Documents rendered from a template version."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id
from keyplane.models.project import Environment
from keyplane.models.template import TemplateFormat
from keyplane.models.user import User


def _document_id() -> str:
    return new_id("doc")


class Document(Model):
    # template_id is kept without a foreign key: a document outlives its template.
    id = fields.CharField(primary_key=True, max_length=32, default=_document_id)
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "keyplane.Environment", related_name="documents", on_delete=fields.CASCADE
    )
    template_id = fields.CharField(max_length=32)
    template_version = fields.IntField()
    format = fields.CharEnumField(TemplateFormat, max_length=16)
    content = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)
    # Who made it: the acting user always; the key when a key did.
    created_by: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="documents", on_delete=fields.RESTRICT
    )
    created_by_key_id = fields.CharField(max_length=32, null=True)
    auth_kind = fields.CharField(max_length=16)

    class Meta:
        table = "document"
        indexes = (("environment_id", "created_at"), ("template_id", "created_at"))
