"""GraphQL types for project members and the invitations that bring them in."""

from __future__ import annotations

from datetime import datetime

import strawberry

import keyplane.schema.enums  # noqa: F401  (registers enum descriptions first)
from keyplane import models
from keyplane.context import Info
from keyplane.errors import NotFound
from keyplane.permissions.scopes import Role
from keyplane.resolvers import member as member_resolvers
from keyplane.resolvers.member import IssuedInvitation, MemberRecord
from keyplane.schema.idempotency import idempotency_key_field, replayed_field
from keyplane.schema.node import Node
from keyplane.schema.permissions import may_refuse
from keyplane.schema.project import Environment
from keyplane.schema.user import User


async def _environments(
    info: Info, project_id: str, environment_ids: frozenset[str] | None
) -> list[Environment]:
    found = await member_resolvers.environments_of(
        info.context.access, project_id=project_id, environment_ids=environment_ids
    )
    return [Environment.from_model(environment) for environment in found]


@strawberry.type(
    description="A user's membership of a project: a role over every environment or a few."
)
class Member(Node):
    id: strawberry.ID = strawberry.field(description="Opaque member id (`mem_...`).")
    role: Role = strawberry.field(
        description="OWNER or ADMIN: all four scopes; DEVELOPER: GENERATE_DOCUMENTS, "
        "MANAGE_TEMPLATES, VIEW_ANALYTICS; VIEWER: VIEW_ANALYTICS."
    )
    all_environments: bool = strawberry.field(
        description="True: every environment of the project, including ones created later. "
        "False: only those granted one by one."
    )
    created_at: datetime = strawberry.field(description="When the user became a member.")
    user_id: strawberry.Private[str]
    project_id: strawberry.Private[str]
    environment_ids: strawberry.Private[frozenset[str] | None]

    @classmethod
    def from_record(cls, record: MemberRecord) -> Member:
        return cls(
            id=strawberry.ID(record.id),
            role=record.grant.role,
            all_environments=record.grant.all_environments,
            created_at=record.created_at,
            user_id=record.user_id,
            project_id=record.project_id,
            environment_ids=record.grant.environment_ids,
        )

    @strawberry.field(
        description="The member's account.",
        metadata=may_refuse("NOT_FOUND when the account is gone"),
    )
    async def user(self, info: Info) -> User | None:
        user = await info.context.loaders.user.load(self.user_id)
        if user is None:
            raise NotFound()
        access = info.context.access
        visible = access.owns(user.id) or await access.reads_project_emails(self.project_id)
        return User.from_model(user, email_visible=visible)

    @strawberry.field(
        description="The environments the member reaches (all of the project's when "
        "allEnvironments), among those the caller can see: an API key sees its own only."
    )
    async def environments(self, info: Info) -> list[Environment]:
        return await _environments(info, self.project_id, self.environment_ids)


@strawberry.type(description="An invitation to join a project, accepted with its token.")
class Invitation(Node):
    id: strawberry.ID = strawberry.field(description="Opaque invitation id (`inv_...`).")
    email: str = strawberry.field(
        description="Who may accept it: the signed-in user with this email, lower-cased."
    )
    role: Role = strawberry.field(description="The role the member will have.")
    all_environments: bool = strawberry.field(
        description="True: the member will reach every environment, including later ones."
    )
    created_at: datetime = strawberry.field(description="When the invitation was issued.")
    expires_at: datetime = strawberry.field(
        description="When the token stops working (7 days after issue)."
    )
    accepted_at: datetime | None = strawberry.field(description="When it was accepted, if it was.")
    project_id: strawberry.Private[str]
    environment_ids: strawberry.Private[frozenset[str] | None]

    @classmethod
    def from_model(cls, invitation: models.Invitation) -> Invitation:
        grant = member_resolvers.invitation_grant(invitation)
        return cls(
            id=strawberry.ID(invitation.id),
            email=invitation.email,
            role=grant.role,
            all_environments=grant.all_environments,
            created_at=invitation.created_at,
            expires_at=invitation.expires_at,
            accepted_at=invitation.accepted_at,
            project_id=invitation.project_id,  # type: ignore[attr-defined]
            environment_ids=grant.environment_ids,
        )

    @strawberry.field(
        description="The environments the member will reach (all of the project's when "
        "allEnvironments), among those the caller can see."
    )
    async def environments(self, info: Info) -> list[Environment]:
        return await _environments(info, self.project_id, self.environment_ids)


@strawberry.type(description="A new invitation and its token, shown this once only.")
class InviteMemberPayload:
    invitation: Invitation = strawberry.field(description="The pending invitation.")
    token: str | None = strawberry.field(
        description="The invitation token (`fmi_...`): deliver it to the invitee out of band; "
        "it cannot be shown again. Whoever signs in with the invited email accepts it with "
        "acceptInvitation. Null when `replayed`."
    )
    replayed: bool = replayed_field()

    @classmethod
    def from_issued(cls, issued: IssuedInvitation) -> InviteMemberPayload:
        return cls(
            invitation=Invitation.from_model(issued.invitation),
            token=issued.token,
            replayed=issued.replayed,
        )


@strawberry.input(description="Invite someone to a project by email.")
class InviteMemberInput:
    project_id: strawberry.ID = strawberry.field(description="The project.")
    email: str = strawberry.field(
        description="The invitee's email; they may sign up with it even when sign-up is closed."
    )
    role: Role = strawberry.field(description="At most your own role (an API key: at most ADMIN).")
    environment_ids: list[strawberry.ID] = strawberry.field(
        default_factory=list,
        description="Environments of the project to grant, at most 100; empty for all of them, "
        "including ones created later. An API key must give exactly its own environment.",
    )
    idempotency_key: str | None = idempotency_key_field()


@strawberry.input(description="Change a member's role or environments; omitted fields stay.")
class UpdateMemberInput:
    member_id: strawberry.ID = strawberry.field(description="The member.")
    role: Role | None = strawberry.field(
        default=None, description="New role, at most your own (an API key: at most ADMIN)."
    )
    environment_ids: list[strawberry.ID] | None = strawberry.field(
        default=None,
        description="New environments, at most 100; empty for all of them. An API key must "
        "give exactly its own environment.",
    )
