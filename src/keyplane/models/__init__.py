"""Tortoise models, one module per domain concept; Tortoise discovers them from this package."""

from keyplane.models.activity import ActivityEvent
from keyplane.models.api_key import ApiKey
from keyplane.models.document import Document
from keyplane.models.idempotency import IdempotentRequest
from keyplane.models.member import Invitation, Member, MemberEnvironment
from keyplane.models.policy import EnvironmentPolicy
from keyplane.models.project import Environment, Project
from keyplane.models.template import Template, TemplateVersion
from keyplane.models.usage import ApiKeyScopeUse, UsageBucket
from keyplane.models.user import LoginFailure, OAuthIdentity, Session, User

__all__ = [
    "ActivityEvent",
    "ApiKey",
    "ApiKeyScopeUse",
    "Document",
    "Environment",
    "EnvironmentPolicy",
    "IdempotentRequest",
    "Invitation",
    "LoginFailure",
    "Member",
    "MemberEnvironment",
    "OAuthIdentity",
    "Project",
    "Session",
    "Template",
    "TemplateVersion",
    "UsageBucket",
    "User",
]
