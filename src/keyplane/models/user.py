"""Dashboard users, their sessions and their linked OAuth identities."""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model

from keyplane.models.base import new_id


def _user_id() -> str:
    return new_id("usr")


def _session_id() -> str:
    return new_id("ses")


def _identity_id() -> str:
    return new_id("oid")


def _login_failure_id() -> str:
    return new_id("lgf")


class User(Model):
    id = fields.CharField(primary_key=True, max_length=32, default=_user_id)
    email = fields.CharField(max_length=254, unique=True)
    name = fields.CharField(max_length=64)
    password_hash = fields.CharField(max_length=255)
    created_at = fields.DatetimeField(auto_now_add=True)
    # Set after too many failed logins: until then every login is refused (resolvers/user.py).
    locked_until = fields.DatetimeField(null=True)

    class Meta:
        table = "user"


class LoginFailure(Model):
    # One wrong password for an account, kept while it can still count towards a lockout.

    id = fields.CharField(primary_key=True, max_length=32, default=_login_failure_id)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="login_failures", on_delete=fields.CASCADE
    )
    at = fields.DatetimeField()

    class Meta:
        table = "login_failure"
        indexes = (("user_id", "at"),)


class Session(Model):
    # One dashboard login; its id is the JWT's `sid`, and `ended_at` is set by logOut.

    id = fields.CharField(primary_key=True, max_length=32, default=_session_id)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="sessions", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()
    ended_at = fields.DatetimeField(null=True)

    class Meta:
        table = "session"


class OAuthIdentity(Model):
    # Links an external (issuer, subject) pair to a keyplane user.

    id = fields.CharField(primary_key=True, max_length=32, default=_identity_id)
    issuer = fields.CharField(max_length=255)
    subject = fields.CharField(max_length=255)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "keyplane.User", related_name="oauth_identities", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "oauth_identity"
        unique_together = (("issuer", "subject"),)
