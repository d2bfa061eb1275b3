"""Every operation, its resolver and its permission, in one place."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, cast

import strawberry
from strawberry.permission import BasePermission
from strawberry.schema.config import StrawberryConfig
from strawberry.types.base import get_object_definition

from keyplane import models
from keyplane.context import Info
from keyplane.errors import NotFound
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
from keyplane.schema.activity import ActivityEvent, ActivityEventConnection
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
from keyplane.schema.node import Node, NodeLookup, find_node, find_nodes, permissions_of
from keyplane.schema.permissions import (
    ruled,
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
from keyplane.schema.viewer import RootValue, Viewer, viewer_user


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
        user=User.from_model(result.user, email_visible=True),  # their own
    )


# Open to anyone: its rule gives a description and metadata, no permission extension.
_VIEWER = ruled("Query.viewer", "Who is calling: kind, user, key, environment and scopes.")


@strawberry.type(description="Read operations.")
class Query:
    # A plain field, read from the root value (viewer.py `RootValue`): no resolver to call.
    viewer: Viewer = strawberry.field(
        description=_VIEWER["description"], metadata=_VIEWER["metadata"]
    )

    @strawberry.field(
        **ruled(
            "Query.scopeCatalog",
            "Every scope a key may carry, with what it allows: the four built-in `Scope` "
            "values, then the extra scopes the running checks declare.",
        )
    )
    def scope_catalog(self, info: Info) -> list[ScopeInfo]:
        return [ScopeInfo.from_record(s) for s in info.context.services.checks.catalog]

    @strawberry.field(
        **ruled(
            "Query.projects",
            "Projects the caller belongs to (for a key: its own).",
        )
    )
    async def projects(self, info: Info) -> list[Project] | None:
        found = await project.list_projects(info.context.access)
        return [Project.from_model(p) for p in found]

    @strawberry.field(
        **ruled(
            "Query.project",
            "One project.",
        )
    )
    async def project(self, info: Info, id: strawberry.ID) -> Project | None:
        found = await project.get_project(info.context.access, project_id=str(id))
        return Project.from_model(found)

    @strawberry.field(
        **ruled(
            "Query.environment",
            "One environment the caller can reach.",
        )
    )
    async def environment(self, info: Info, id: strawberry.ID) -> Environment | None:
        found = await project.get_environment(info.context.access, environment_id=str(id))
        return Environment.from_model(found)

    @strawberry.field(
        **ruled(
            "Query.apiKey",
            "One API key.",
        )
    )
    async def api_key(self, info: Info, id: strawberry.ID) -> ApiKey | None:
        found = await api_key.get_api_key(info.context.access, key_id=str(id))
        return await ApiKey.load(found, context=info.context)

    @strawberry.field(
        **ruled(
            "Query.activity",
            "An environment's activity log, newest first (with project-wide member events).",
        )
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
        **ruled(
            "Query.members",
            "The members of a project. VIEW_ANALYTICS is not enough, as members' emails are shown.",
        )
    )
    async def members(
        self,
        info: Info,
        project_id: Annotated[strawberry.ID, strawberry.argument(description="The project.")],
    ) -> list[Member] | None:
        found = await member.list_members(info.context.access, project_id=str(project_id))
        return [Member.from_record(record) for record in found]

    @strawberry.field(
        **ruled(
            "Query.templates",
            "An environment's templates, newest first.",
        )
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
        **ruled(
            "Query.template",
            "One template.",
        )
    )
    async def template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        found = await template.get_template(info.context.access, template_id=str(id))
        return Template.from_model(found)

    @strawberry.field(
        **ruled(
            "Query.documents",
            "An environment's generated documents, newest first.",
        )
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
        **ruled(
            "Query.document",
            "One generated document.",
        )
    )
    async def document(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The document.")],
    ) -> Document | None:
        found = await document.get_document(info.context.access, document_id=str(id))
        return Document.from_model(found)

    @strawberry.field(
        **ruled(
            "Query.analytics",
            "Documents generated and failed (per period, per template) and API requests "
            "and refusals (per period, per key) of one environment over `[from, to)`, at most 366 "
            "days.",
        )
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

    @strawberry.field(
        **ruled(
            "Query.node",
            "The object with this id, answered as its typed lookup answers it (`project`, "
            "`environment`, `apiKey`, `template`, `document`; a member as `members`, an event as "
            "`activity`, a user as `viewer.user`): null and NOT_FOUND outside your reach or for "
            "an id that names nothing, the same permission errors. An invitation is not read "
            "back.",
        )
    )
    async def node(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="Any object's id.")],
    ) -> Node | None:
        return await find_node(info, str(id), NODE_LOOKUPS)  # type: ignore[return-value]

    # Open, and not a refusal of the whole list: each id is checked as `node` checks it
    # (authentication included), and a refused one nulls its own item only.
    @strawberry.field(
        **ruled(
            "Query.nodes",
            "Up to 100 objects by id, in order, each answered as `node(id)` answers it: an id "
            "refused or not found is null with its own error, the others are unharmed. More "
            "than 100 ids: BAD_USER_INPUT.",
        )
    )
    async def nodes(
        self,
        info: Info,
        ids: Annotated[list[strawberry.ID], strawberry.argument(description="At most 100 ids.")],
    ) -> list[Node | None]:
        return await find_nodes(info, [str(i) for i in ids], NODE_LOOKUPS)  # type: ignore[return-value]


def _typed_lookup(name: str) -> NodeLookup:
    """The lookup of the root field `name` (`id` its only argument), its permissions first."""
    [field] = [f for f in get_object_definition(Query, strict=True).fields if f.python_name == name]
    assert field.base_resolver is not None
    # The method as written in Query (Strawberry types it loosely: a static or class method
    # would do too).
    resolve = cast(Callable[..., Awaitable[object]], field.base_resolver.wrapped_func)

    async def find(info: Info, node_id: str) -> object:
        return await resolve(None, info, strawberry.ID(node_id))

    return NodeLookup(permissions_of(field), find)


def _root_permissions(name: str) -> tuple[BasePermission, ...]:
    [field] = [f for f in get_object_definition(Query, strict=True).fields if f.python_name == name]
    return permissions_of(field)


async def _find_member(info: Info, node_id: str) -> object:
    return Member.from_record(await member.get_member(info.context.access, member_id=node_id))


async def _find_event(info: Info, node_id: str) -> object:
    found = await activity.get_activity_event(info.context.access, event_id=node_id)
    return ActivityEvent.from_model(found)


async def _find_user(info: Info, node_id: str) -> object:
    # Users are reached as `viewer.user` only: your own account, or a key's creator.
    if info.context.principal.user_id != node_id:
        raise NotFound()
    found = viewer_user(info)
    return await found if inspect.isawaitable(found) else found


# Which lookup answers `node(id)`, by the id's prefix (models/*.py make the ids).
NODE_LOOKUPS: dict[str, NodeLookup] = {
    "prj": _typed_lookup("project"),
    "env": _typed_lookup("environment"),
    "key": _typed_lookup("api_key"),
    "tpl": _typed_lookup("template"),
    "doc": _typed_lookup("document"),
    "mem": NodeLookup(_root_permissions("members"), _find_member),
    "evt": NodeLookup(_root_permissions("activity"), _find_event),
    "usr": NodeLookup((), _find_user),
}


@strawberry.type(description="Write operations.")
class Mutation:
    @strawberry.mutation(
        **ruled(
            "Mutation.signUp",
            "Create a dashboard account and sign in.",
        )
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
        **ruled(
            "Mutation.logIn",
            "Sign in; returns a short-lived dashboard token.",
        )
    )
    async def log_in(self, info: Info, input: LogInInput) -> AuthPayload | None:
        services = info.context.services
        return _grant(
            await user.log_in(
                services.users, email=input.email, password=input.password, now=info.context.now
            )
        )

    @strawberry.mutation(
        # Only a dashboard JWT is a session; an OAuth token or a key is refused as FORBIDDEN.
        **ruled(
            "Mutation.logOut",
            "End this dashboard session: its token is refused from the next request on.",
        )
    )
    async def log_out(self, info: Info) -> bool | None:
        return await user.log_out(
            info.context.principal,
            now=info.context.now,
            credentials=info.context.services.credentials,
        )

    @strawberry.mutation(
        **ruled(
            "Mutation.createProject",
            "Create a project; the caller becomes its OWNER.",
        )
    )
    async def create_project(self, info: Info, input: CreateProjectInput) -> Project | None:
        created = await project.create_project(
            info.context.access,
            name=input.name,
            now=info.context.now,
            idempotency_key=input.idempotency_key,
        )
        return Project.from_model(created)

    @strawberry.mutation(
        **ruled(
            "Mutation.createEnvironment",
            "Create an environment.",
        )
    )
    async def create_environment(
        self, info: Info, input: CreateEnvironmentInput
    ) -> Environment | None:
        created = await project.create_environment(
            info.context.access,
            project_id=str(input.project_id),
            name=input.name,
            now=info.context.now,
            idempotency_key=input.idempotency_key,
        )
        return Environment.from_model(created)

    @strawberry.mutation(
        **ruled(
            "Mutation.createApiKey",
            "Issue an API key; its secret is in the payload, this once only.",
        )
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
            idempotency_key=input.idempotency_key,
        )
        return await CreateApiKeyPayload.from_issued(issued, context=info.context)

    @strawberry.mutation(
        **ruled(
            "Mutation.updateApiKey",
            "Rename a key or change its scopes.",
        )
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
        **ruled(
            "Mutation.revokeApiKey",
            "Revoke a key now: its next request gets HTTP 401.",
        )
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
        **ruled(
            "Mutation.deleteApiKey",
            "Delete a key for good; returns what it was.",
        )
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
        **ruled(
            "Mutation.rotateApiKey",
            "Issue a replacement key and expire the old one after an overlap; the replacement "
            "keeps the old key's own lifetime (none if it had no expiry). A key is replaced "
            "once: rotating it again is a CONFLICT naming the replacement in "
            "`extensions.replacedBy`.",
        )
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
            idempotency_key=input.idempotency_key,
        )
        return await RotateApiKeyPayload.from_issued(issued, context=info.context)

    @strawberry.mutation(
        **ruled(
            "Mutation.updateEnvironmentPolicy",
            "Set an environment's key policy: createApiKey, updateApiKey and rotateApiKey "
            "outside it get BAD_USER_INPUT naming the rule; keys issued before are listed by "
            "Environment.keysOutsidePolicy.",
        )
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
        **ruled(
            "Mutation.inviteMember",
            "Invite someone by email to a project, valid 7 days; the token is in the "
            "payload, this once only. A key grants only its own environment and at most ADMIN. "
            "Nobody grants a role above their own (FORBIDDEN); an email that is already a member: "
            "CONFLICT. Inviting an email again replaces its pending invitation.",
        )
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
            idempotency_key=input.idempotency_key,
        )
        return InviteMemberPayload.from_issued(issued)

    @strawberry.mutation(
        **ruled(
            "Mutation.acceptInvitation",
            "Join a project with an invitation token, as the signed-in user the "
            "invitation was sent to (a dashboard session, or an OAuth token with project:manage). "
            "A token that is unknown, malformed, used, expired or for another email is NOT_FOUND, "
            "all alike; already a member: CONFLICT.",
        )
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
        **ruled(
            "Mutation.updateMember",
            "Change a member's role or environments; effective from the next request. "
            "A member ranked above you is FORBIDDEN; demoting or narrowing the project's last "
            "OWNER of every environment is a CONFLICT.",
        )
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
        **ruled(
            "Mutation.removeMember",
            "Remove a member (yourself included); effective from the next request. "
            "Removing the last OWNER of every environment is a CONFLICT. The API keys the member "
            "created in the project are revoked with it (each logged as KEY_REVOKED), unless "
            "keepApiKeys hands them to you. Returns what the membership was.",
        )
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
        **ruled(
            "Mutation.createTemplate",
            "Create a template (a draft: publish it to generate documents). A syntax "
            "error is BAD_USER_INPUT on `content`, naming the line; a name already used there is a "
            "CONFLICT.",
        )
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
        **ruled(
            "Mutation.updateTemplate",
            "Rename a template or edit its draft; the published version, and the "
            "documents generated from it, are unchanged until the next publish.",
        )
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
        **ruled(
            "Mutation.deleteTemplate",
            "Delete a template and its versions (its documents stay); returns what it was.",
        )
    )
    async def delete_template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        deleted, versions = await template.delete_template(info.context.access, template_id=str(id))
        return Template.from_model(deleted, versions=versions)

    @strawberry.mutation(
        **ruled(
            "Mutation.publishTemplate",
            "Freeze the draft as the next numbered version (1 first) and generate "
            "documents from it. An unchanged draft is not frozen twice.",
        )
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
        **ruled(
            "Mutation.unpublishTemplate",
            "Stop generating documents from this template (generateDocument then "
            "answers CONFLICT); versions and draft are kept.",
        )
    )
    async def unpublish_template(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The template.")],
    ) -> Template | None:
        unpublished = await template.unpublish_template(info.context.access, template_id=str(id))
        return Template.from_model(unpublished)

    @strawberry.mutation(
        **ruled(
            "Mutation.generateDocument",
            "Render a template's published version with `data` into a document of the "
            "template's environment. No published version: CONFLICT. Rendering runs in a sandbox "
            "bounded in time and output size; whatever fails there (undefined value, sandbox "
            "refusal, time or size limit...) is BAD_USER_INPUT with a clear message, recorded as "
            "DOCUMENT_FAILED.",
        )
    )
    async def generate_document(self, info: Info, input: GenerateDocumentInput) -> Document | None:
        generated = await document.generate_document(
            info.context.access,
            info.context.services.renderer,
            template_id=str(input.template_id),
            data=input.data,
            now=info.context.now,
            idempotency_key=input.idempotency_key,
        )
        return Document.from_model(generated)

    @strawberry.mutation(
        **ruled(
            "Mutation.generateReport",
            "The figures of `analytics` as a CSV or JSON document to download (layout in "
            "the `ReportFormat` description).",
        )
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
        root_value=RootValue,
    )


# The schema with default settings: exported as schema.graphql and used by tooling.
schema = build_schema()

__all__ = ["Mutation", "Query", "build_schema", "models", "schema"]
