"""Tortoise models, one module per domain concept; Tortoise discovers them from this package."""

from keyplane.models.activity import ActivityEvent
from keyplane.models.api_key import ApiKey
from keyplane.models.document import Document
from keyplane.models.member import Invitation, Member, MemberEnvironment
from keyplane.models.policy import EnvironmentPolicy
from keyplane.models.project import Environment, Project
from keyplane.models.template import Template, TemplateVersion
from keyplane.models.usage import UsageBucket
from keyplane.models.user import LoginFailure, OAuthIdentity, Session, User

__all__ = [
    "ActivityEvent",
    "ApiKey",
    "Document",
    "Environment",
    "EnvironmentPolicy",
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
