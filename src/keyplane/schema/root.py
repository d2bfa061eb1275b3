"""Every operation, its resolver and its permission, in one place."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.schema.config import StrawberryConfig

from keyplane import models
from keyplane.auth.principal import AuthKind
from keyplane.context import Info
from keyplane.models.activity import ActivityKind
from keyplane.permissions.scopes import Scope
from keyplane.resolvers import (
    activity,
    analytics,
    api_key,
    document,
    member,
    policy,
    project,
    template,
    user,
)
from keyplane.resolvers.analytics import AnalyticsGranularity
from keyplane.schema.activity import ActivityEventConnection
from keyplane.schema.analytics import Analytics, GenerateReportInput, Report
from keyplane.schema.api_key import (
    ApiKey,
    CreateApiKeyInput,
    CreateApiKeyPayload,
    RotateApiKeyInput,
    RotateApiKeyPayload,
    UpdateApiKeyInput,
)
from keyplane.schema.document import Document, DocumentConnection, GenerateDocumentInput
from keyplane.schema.engine import KeyplaneSchema, QueryPolicy
from keyplane.schema.executor import Executor
from keyplane.schema.member import (
    InviteMemberInput,
    InviteMemberPayload,
    Member,
    UpdateMemberInput,
)
from keyplane.schema.permissions import (
    PASSES_CHECKS,
    HasAnyScope,
    IsAuthenticated,
    IsUser,
    open_to_anyone,
)
from keyplane.schema.project import (
    CreateEnvironmentInput,
    CreateProjectInput,
    Environment,
    EnvironmentPolicy,
    Project,
    UpdateEnvironmentPolicyInput,
)
from keyplane.schema.scope import ScopeInfo
from keyplane.schema.template import (
    CreateTemplateInput,
    Template,
    TemplateConnection,
    UpdateTemplateInput,
)
from keyplane.schema.user import AuthPayload, LogInInput, SignUpInput, User
from keyplane.schema.viewer import Viewer

MANAGE = HasAnyScope(Scope.MANAGE_PROJECT)
READ_KEYS = HasAnyScope(Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS)


def guarded(*permissions: BasePermission) -> list[Any]:
    """The permission extension of a root field: every root field declares one, or says in its
    metadata that it is `open_to_anyone()`."""
    return [
        PermissionExtension(
            permissions=[*permissions, PASSES_CHECKS], fail_silently=False, use_directives=False
        )
    ]


def _restrictions(input: CreateApiKeyInput | UpdateApiKeyInput) -> api_key.Restrictions:
    return api_key.Restrictions(
        allowed_cidrs=input.allowed_cidrs,
        allowed_origins=input.allowed_origins,
        extra_scopes=input.extra_scopes,
    )


def _grant(result: user.SessionGrant) -> AuthPayload:
    return AuthPayload(
        access_token=result.access_token,
        expires_at=result.expires_at,
        user=User.from_model(result.user),
    )


@strawberry.type(description="Read operations.")
class Query:
    @strawberry.field(
        description="Who is calling: kind, user, key, environment and scopes.",
        metadata=open_to_anyone(),
    )
    def viewer(self, info: Info) -> Viewer:
        principal = info.context.principal
        return Viewer(kind=principal.kind, scopes=sorted(principal.token_scopes))

    @strawberry.field(
        description="Every scope a key may carry, with what it allows: the four built-in "
        "`Scope` values, then the extra scopes the running checks declare.",
        metadata=open_to_anyone(),
    )
    def scope_catalog(self, info: Info) -> list[ScopeInfo]:
        return [ScopeInfo.from_record(s) for s in info.context.services.checks.catalog]

    @strawberry.field(
        description="Projects the caller belongs to (for a key: its own).",
        extensions=guarded(IsAuthenticated()),
    )
    async def projects(self, info: Info) -> list[Project]:
        found = await project.list_projects(info.context.access)
        return [Project.from_model(p) for p in found]

    @strawberry.field(description="One project.", extensions=guarded(IsAuthenticated()))
    async def project(self, info: Info, id: strawberry.ID) -> Project | None:
        found = await project.get_project(info.context.access, project_id=str(id))
        return Project.from_model(found)

    @strawberry.field(
        description="One environment the caller can reach.", extensions=guarded(IsAuthenticated())
    )
    async def environment(self, info: Info, id: strawberry.ID) -> Environment | None:
        found = await project.get_environment(info.context.access, environment_id=str(id))
        return Environment.from_model(found)

    @strawberry.field(
        description="One API key. Needs MANAGE_PROJECT or VIEW_ANALYTICS in its environment "
        "(a key may always read itself).",
        extensions=guarded(IsAuthenticated()),
    )
    async def api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        found = await api_key.get_api_key(info.context.access, key_id=str(id))
        return await ApiKey.load(found, context=info.context)

    @strawberry.field(
        description="An environment's activity log, newest first (with project-wide member "
        "events). Needs MANAGE_PROJECT or VIEW_ANALYTICS there.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS)),
    )
    async def activity(
        self,
        info: Info,
        environment_id: strawberry.ID,
        first: int = 20,
        after: str | None = None,
        kinds: list[ActivityKind] | None = None,
    ) -> ActivityEventConnection | None:
        page = await activity.list_activity(
            info.context.access,
            environment_id=str(environment_id),
            first=first,
            after=after,
            kinds=kinds,
        )
        return ActivityEventConnection.from_page(page)

    @strawberry.field(
        description="The members of a project. Needs MANAGE_PROJECT across the project (a "
        "MANAGE_PROJECT key: the members who reach its environment); VIEW_ANALYTICS is not "
        "enough, as members' emails are shown.",
        extensions=guarded(MANAGE),
    )
    async def members(
        self,
        info: Info,
        project_id: Annotated[strawberry.ID, strawberry.argument(description="The project.")],
    ) -> list[Member]:
        found = await member.list_members(info.context.access, project_id=str(project_id))
        return [Member.from_record(record) for record in found]

    @strawberry.field(
        description="An environment's templates, newest first. Needs MANAGE_TEMPLATES or "
        "GENERATE_DOCUMENTS there.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES, Scope.GENERATE_DOCUMENTS)),
    )
    async def templates(
        self,
        info: Info,
        environment_id: Annotated[
            strawberry.ID, strawberry.argument(description="The environment.")
        ],
        first: Annotated[int, strawberry.argument(description="Page size, 1 to 100.")] = 20,
        after: Annotated[
            str | None, strawberry.argument(description="endCursor of the previous page.")
        ] = None,
        published: Annotated[
            bool | None,
            strawberry.argument(
                description="true: only templates with a published version; false: only "
                "unpublished ones; null: all."
            ),
        ] = None,
    ) -> TemplateConnection | None:
        page = await template.list_templates(
            info.context.access,
            environment_id=str(environment_id),
            first=first,
            after=after,
            published=published,
        )
        return TemplateConnection.from_page(page)

    @strawberry.field(
        description="One template. Needs MANAGE_TEMPLATES or GENERATE_DOCUMENTS in its "
        "environment.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES, Scope.GENERATE_DOCUMENTS)),
    )
    async def template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        found = await template.get_template(info.context.access, template_id=str(id))
        return Template.from_model(found)

    @strawberry.field(
        description="An environment's generated documents, newest first. Needs "
        "GENERATE_DOCUMENTS or VIEW_ANALYTICS there.",
        extensions=guarded(HasAnyScope(Scope.GENERATE_DOCUMENTS, Scope.VIEW_ANALYTICS)),
    )
    async def documents(
        self,
        info: Info,
        environment_id: Annotated[
            strawberry.ID, strawberry.argument(description="The environment.")
        ],
        first: Annotated[int, strawberry.argument(description="Page size, 1 to 100.")] = 20,
        after: Annotated[
            str | None, strawberry.argument(description="endCursor of the previous page.")
        ] = None,
    ) -> DocumentConnection | None:
        page = await document.list_documents(
            info.context.access, environment_id=str(environment_id), first=first, after=after
        )
        return DocumentConnection.from_page(page)

    @strawberry.field(
        description="One generated document. Needs GENERATE_DOCUMENTS or VIEW_ANALYTICS in its "
        "environment.",
        extensions=guarded(HasAnyScope(Scope.GENERATE_DOCUMENTS, Scope.VIEW_ANALYTICS)),
    )
    async def document(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The document.")],
    ) -> Document | None:
        found = await document.get_document(info.context.access, document_id=str(id))
        return Document.from_model(found)

    @strawberry.field(
        description="Documents generated and failed (per period, per template) and API requests "
        "and refusals (per period, per key) of one environment over `[from, to)`, at most 366 "
        "days. Needs VIEW_ANALYTICS there.",
        extensions=guarded(HasAnyScope(Scope.VIEW_ANALYTICS)),
    )
    async def analytics(
        self,
        info: Info,
        environment_id: Annotated[
            strawberry.ID, strawberry.argument(description="The environment.")
        ],
        from_: Annotated[
            datetime, strawberry.argument(name="from", description="Start (included).")
        ],
        to: Annotated[datetime, strawberry.argument(description="End (excluded).")],
        granularity: Annotated[
            AnalyticsGranularity, strawberry.argument(description="The length of a period.")
        ] = AnalyticsGranularity.DAY,
    ) -> Analytics | None:
        figures = await analytics.environment_analytics(
            info.context.access,
            info.context.services.usage,
            environment_id=str(environment_id),
            start=from_,
            end=to,
            granularity=granularity,
        )
        return Analytics.from_figures(figures)


@strawberry.type(description="Write operations.")
class Mutation:
    @strawberry.mutation(
        description="Create a dashboard account and sign in.", metadata=open_to_anyone()
    )
    async def sign_up(self, info: Info, input: SignUpInput) -> AuthPayload | None:
        services = info.context.services
        return _grant(
            await user.sign_up(
                services.users,
                email=input.email,
                password=input.password,
                name=input.name,
                now=info.context.now,
            )
        )

    @strawberry.mutation(
        description="Sign in; returns a short-lived dashboard token.",
        metadata=open_to_anyone(),
    )
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload | None:
        services = info.context.services
        return _grant(
            await user.log_in(
                services.users, email=input.email, password=input.password, now=info.context.now
            )
        )

    @strawberry.mutation(
        description="End this dashboard session: its token is refused from the next request on.",
        # Only a dashboard JWT is a session; an OAuth token or a key is refused as FORBIDDEN.
        extensions=guarded(IsUser(AuthKind.JWT)),
    )
    async def log_out(self, info: Info) -> bool | None:
        return await user.log_out(
            info.context.principal,
            now=info.context.now,
            credentials=info.context.services.credentials,
        )

    @strawberry.mutation(
        description="Create a project; the caller becomes its OWNER.",
        extensions=guarded(IsUser(), MANAGE),
    )
    async def create_project(self, info: Info, input: CreateProjectInput) -> Project | None:
        created = await project.create_project(info.context.access, name=input.name)
        return Project.from_model(created)

    @strawberry.mutation(
        description="Create an environment; needs MANAGE_PROJECT across the project.",
        extensions=guarded(IsUser(), MANAGE),
    )
    async def create_environment(
        self, info: Info, input: CreateEnvironmentInput
    ) -> Environment | None:
        created = await project.create_environment(
            info.context.access, project_id=str(input.project_id), name=input.name
        )
        return Environment.from_model(created)

    @strawberry.mutation(
        description="Issue an API key; its secret is in the payload, this once only.",
        extensions=guarded(MANAGE),
    )
    async def create_api_key(
        self, info: Info, input: CreateApiKeyInput
    ) -> CreateApiKeyPayload | None:
        issued = await api_key.create_api_key(
            info.context.access,
            environment_id=str(input.environment_id),
            name=input.name,
            scopes=input.scopes,
            expires_at=input.expires_at,
            now=info.context.now,
            rate_limit_per_minute=input.rate_limit_per_minute,
            restrictions=_restrictions(input),
            catalog=info.context.services.checks.extra_scopes,
            credentials=info.context.services.credentials,
        )
        return await CreateApiKeyPayload.from_issued(issued, context=info.context)

    @strawberry.mutation(
        description="Rename a key or change its scopes.", extensions=guarded(MANAGE)
    )
    async def update_api_key(self, info: Info, input: UpdateApiKeyInput) -> ApiKey | None:
        updated = await api_key.update_api_key(
            info.context.access,
            key_id=str(input.id),
            name=input.name,
            scopes=input.scopes,
            rate_limit_per_minute=input.rate_limit_per_minute,
            clear_rate_limit=input.clear_rate_limit,
            restrictions=_restrictions(input),
            catalog=info.context.services.checks.extra_scopes,
            now=info.context.now,
            credentials=info.context.services.credentials,
        )
        return await ApiKey.load(updated, context=info.context)

    @strawberry.mutation(
        description="Revoke a key now: its next request gets HTTP 401.", extensions=guarded(MANAGE)
    )
    async def revoke_api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        revoked = await api_key.revoke_api_key(
            info.context.access,
            key_id=str(id),
            now=info.context.now,
            credentials=info.context.services.credentials,
        )
        return await ApiKey.load(revoked, context=info.context)

    @strawberry.mutation(
        description="Delete a key for good; returns what it was.", extensions=guarded(MANAGE)
    )
    async def delete_api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        deleted = await api_key.delete_api_key(
            info.context.access,
            key_id=str(id),
            now=info.context.now,
            credentials=info.context.services.credentials,
        )
        return await ApiKey.load(deleted, context=info.context)

    @strawberry.mutation(
        description="Issue a replacement key and expire the old one after an overlap.",
        extensions=guarded(MANAGE),
    )
    async def rotate_api_key(
        self, info: Info, input: RotateApiKeyInput
    ) -> RotateApiKeyPayload | None:
        issued = await api_key.rotate_api_key(
            info.context.access,
            key_id=str(input.id),
            expire_old_in_seconds=input.expire_old_in_seconds,
            now=info.context.now,
            credentials=info.context.services.credentials,
        )
        return await RotateApiKeyPayload.from_issued(issued, context=info.context)

    @strawberry.mutation(
        description="Set an environment's key policy: createApiKey, updateApiKey and "
        "rotateApiKey outside it get BAD_USER_INPUT naming the rule; keys issued before are "
        "listed by Environment.keysOutsidePolicy. Needs MANAGE_PROJECT there; people only.",
        extensions=guarded(IsUser(), MANAGE),
    )
    async def update_environment_policy(
        self, info: Info, input: UpdateEnvironmentPolicyInput
    ) -> EnvironmentPolicy | None:
        checks = info.context.services.checks
        updated = await policy.update_environment_policy(
            info.context.access,
            environment_id=str(input.environment_id),
            require_expiry=input.require_expiry,
            max_lifetime_days=input.max_lifetime_days,
            allowed_scopes=input.allowed_scopes,
            catalog=frozenset(Scope) | checks.extra_scopes,
        )
        return EnvironmentPolicy.from_policy(updated)

    @strawberry.mutation(
        description="Invite someone by email to a project, valid 7 days; the token is in the "
        "payload, this once only. Needs MANAGE_PROJECT across the project, or a MANAGE_PROJECT "
        "key (which grants only its own environment and at most ADMIN). Nobody grants a role "
        "above their own (FORBIDDEN); an email that is already a member: CONFLICT. Inviting an "
        "email again replaces its pending invitation.",
        extensions=guarded(MANAGE),
    )
    async def invite_member(
        self, info: Info, input: InviteMemberInput
    ) -> InviteMemberPayload | None:
        issued = await member.invite_member(
            info.context.access,
            project_id=str(input.project_id),
            email=input.email,
            role=input.role,
            environment_ids=[str(i) for i in input.environment_ids],
            now=info.context.now,
        )
        return InviteMemberPayload.from_issued(issued)

    @strawberry.mutation(
        description="Join a project with an invitation token, as the signed-in user the "
        "invitation was sent to (a dashboard session, or an OAuth token with project:manage). "
        "A token that is unknown, malformed, used, expired or for another email is NOT_FOUND, "
        "all alike; already a member: CONFLICT.",
        extensions=guarded(IsUser(), MANAGE),
    )
    async def accept_invitation(
        self,
        info: Info,
        token: Annotated[
            str, strawberry.argument(description="The `fmi_...` token from inviteMember.")
        ],
    ) -> Member | None:
        record = await member.accept_invitation(
            info.context.access, token=token, now=info.context.now
        )
        return Member.from_record(record)

    @strawberry.mutation(
        description="Change a member's role or environments; effective from the next request. "
        "Same rights as inviteMember; a member ranked above you is FORBIDDEN; demoting or "
        "narrowing the project's last OWNER of every environment is a CONFLICT.",
        extensions=guarded(MANAGE),
    )
    async def update_member(self, info: Info, input: UpdateMemberInput) -> Member | None:
        record = await member.update_member(
            info.context.access,
            member_id=str(input.member_id),
            role=input.role,
            environment_ids=(
                None if input.environment_ids is None else [str(i) for i in input.environment_ids]
            ),
            now=info.context.now,
            credentials=info.context.services.credentials,
        )
        return Member.from_record(record)

    @strawberry.mutation(
        description="Remove a member (yourself included); effective from the next request. "
        "Same rights as updateMember; removing the last OWNER of every environment is a "
        "CONFLICT. The API keys the member created in the project are revoked with it (each "
        "logged as KEY_REVOKED), unless keepApiKeys hands them to you. Returns what the "
        "membership was.",
        extensions=guarded(MANAGE),
    )
    async def remove_member(
        self,
        info: Info,
        member_id: Annotated[strawberry.ID, strawberry.argument(description="The member.")],
        keep_api_keys: Annotated[
            bool | None,
            strawberry.argument(
                description="Instead of revoking the member's keys, make you their creator, so "
                "they keep working with your role's scopes. Needs MANAGE_PROJECT in each of "
                "their environments (FORBIDDEN otherwise, and nothing changes)."
            ),
        ] = False,
    ) -> Member | None:
        record = await member.remove_member(
            info.context.access,
            member_id=str(member_id),
            keep_api_keys=bool(keep_api_keys),  # null: the default
            now=info.context.now,
            credentials=info.context.services.credentials,
        )
        return Member.from_record(record)

    @strawberry.mutation(
        description="Create a template (a draft: publish it to generate documents). Needs "
        "MANAGE_TEMPLATES in the environment. A syntax error is BAD_USER_INPUT on `content`, "
        "naming the line; a name already used there is a CONFLICT.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES)),
    )
    async def create_template(self, info: Info, input: CreateTemplateInput) -> Template | None:
        created = await template.create_template(
            info.context.access,
            info.context.services.renderer,
            environment_id=str(input.environment_id),
            name=input.name,
            content=input.content,
            template_format=input.format,
        )
        return Template.from_model(created, versions=[])

    @strawberry.mutation(
        description="Rename a template or edit its draft; the published version, and the "
        "documents generated from it, are unchanged until the next publish. Needs "
        "MANAGE_TEMPLATES.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES)),
    )
    async def update_template(self, info: Info, input: UpdateTemplateInput) -> Template | None:
        updated = await template.update_template(
            info.context.access,
            info.context.services.renderer,
            template_id=str(input.id),
            name=input.name,
            content=input.content,
        )
        return Template.from_model(updated)

    @strawberry.mutation(
        description="Delete a template and its versions (its documents stay); returns what it "
        "was. Needs MANAGE_TEMPLATES.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES)),
    )
    async def delete_template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        deleted, versions = await template.delete_template(info.context.access, template_id=str(id))
        return Template.from_model(deleted, versions=versions)

    @strawberry.mutation(
        description="Freeze the draft as the next numbered version (1 first) and generate "
        "documents from it. An unchanged draft is not frozen twice. Needs MANAGE_TEMPLATES.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES)),
    )
    async def publish_template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        published = await template.publish_template(
            info.context.access, template_id=str(id), now=info.context.now
        )
        return Template.from_model(published)

    @strawberry.mutation(
        description="Stop generating documents from this template (generateDocument then "
        "answers CONFLICT); versions and draft are kept. Needs MANAGE_TEMPLATES.",
        extensions=guarded(HasAnyScope(Scope.MANAGE_TEMPLATES)),
    )
    async def unpublish_template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        unpublished = await template.unpublish_template(info.context.access, template_id=str(id))
        return Template.from_model(unpublished)

    @strawberry.mutation(
        description="Render a template's published version with `data` into a document of the "
        "template's environment. Needs GENERATE_DOCUMENTS there. No published version: "
        "CONFLICT. Rendering runs in a sandbox bounded in time and output size; whatever fails "
        "there (undefined value, sandbox refusal, time or size limit...) is BAD_USER_INPUT "
        "with a clear message, recorded as DOCUMENT_FAILED.",
        extensions=guarded(HasAnyScope(Scope.GENERATE_DOCUMENTS)),
    )
    async def generate_document(self, info: Info, input: GenerateDocumentInput) -> Document | None:
        generated = await document.generate_document(
            info.context.access,
            info.context.services.renderer,
            template_id=str(input.template_id),
            data=input.data,
            now=info.context.now,
        )
        return Document.from_model(generated)

    @strawberry.mutation(
        description="The figures of `analytics` as a CSV or JSON document to download (layout in "
        "the `ReportFormat` description). Needs VIEW_ANALYTICS in the environment.",
        extensions=guarded(HasAnyScope(Scope.VIEW_ANALYTICS)),
    )
    async def generate_report(self, info: Info, input: GenerateReportInput) -> Report | None:
        report = await analytics.generate_report(
            info.context.access,
            info.context.services.usage,
            environment_id=str(input.environment_id),
            start=input.from_,
            end=input.to,
            granularity=input.granularity,
            report_format=input.format,
        )
        return Report.from_report(report)


@functools.cache
def build_schema(*, max_batch: int = 25, policy: QueryPolicy | None = None) -> KeyplaneSchema:
    """The schema for a batch size and query policy; built once for each (building costs tens
    of ms)."""
    return KeyplaneSchema(
        query=Query,
        mutation=Mutation,
        config=StrawberryConfig(
            disable_field_suggestions=True, batching_config={"max_operations": max_batch}
        ),
        execution_context_class=Executor,
        policy=policy or QueryPolicy(),
    )


# The schema with default settings: exported as schema.graphql and used by tooling.
schema = build_schema()

__all__ = ["Mutation", "Query", "build_schema", "models", "schema"]
