"""Who may reach which environment of a project: members, their environment grants, and
invitations to become one."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id
from keyplane.models.project import Environment, Project
from keyplane.models.user import User
from keyplane.permissions.scopes import Role


def _member_id() -> str:
    return new_id("mem")


def _invitation_id() -> str:
    return new_id("inv")


class Member(Model):
    # A user's role in a project, over all environments or a listed subset.

    id = fields.CharField(primary_key=True, max_length=32, default=_member_id)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "keyplane.Project", related_name="members", on_delete=fields.CASCADE
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="memberships", on_delete=fields.CASCADE
    )
    role = fields.CharEnumField(Role, max_length=16)
    all_environments = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "member"
        unique_together = (("project", "user"),)


class MemberEnvironment(Model):
    # One environment a subset-limited member may reach.

    id = fields.IntField(primary_key=True)
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "keyplane.Member", related_name="environment_grants", on_delete=fields.CASCADE
    )
    environment: fields.ForeignKeyRelation[Environment] = fields.ForeignKeyField(
        "keyplane.Environment", related_name="member_grants", on_delete=fields.CASCADE
    )

    class Meta:
        table = "member_environment"
        unique_together = (("member", "environment"),)


class Invitation(Model):
    # A pending invitation to a project; its token is shown once and stored hashed.

    id = fields.CharField(primary_key=True, max_length=32, default=_invitation_id)
    project: fields.ForeignKeyRelation[Project] = fields.ForeignKeyField(
        "keyplane.Project", related_name="invitations", on_delete=fields.CASCADE
    )
    email = fields.CharField(max_length=254, db_index=True)
    role = fields.CharEnumField(Role, max_length=16)
    # Empty: every environment of the project.
    environment_ids: fields.JSONField[list[str]] = fields.JSONField(default=list)
    invited_by: fields.ForeignKeyNullableRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="sent_invitations", on_delete=fields.SET_NULL, null=True
    )
    token_hash = fields.CharField(max_length=64, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    accepted_at = fields.DatetimeField(null=True)

    class Meta:
        table = "invitation"
