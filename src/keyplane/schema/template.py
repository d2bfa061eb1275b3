"""GraphQL types for templates, their published versions, their pages and their inputs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.relay import PageInfo

from keyplane import models
from keyplane.context import Info
from keyplane.errors import NotFound
from keyplane.models.template import TemplateFormat
from keyplane.resolvers import template as template_resolvers
from keyplane.resolvers.pagination import Page, encode_cursor
from keyplane.schema.node import Node
from keyplane.schema.pagination import TOTAL_COUNT, page_info, total_count
from keyplane.schema.permissions import may_refuse
from keyplane.schema.user import User

strawberry.enum(
    TemplateFormat,
    description="What a template writes: HTML (every printed value is HTML-escaped), MARKDOWN "
    "or TEXT (values printed as they are).",
)


@strawberry.type(description="A published version of a template, frozen: it never changes.")
class TemplateVersion:
    version: int = strawberry.field(description="Its number: 1 for the first publish, then +1.")
    content: str = strawberry.field(description="The Jinja2 source frozen at publishing.")
    published_at: datetime = strawberry.field(description="When it was published.")
    published_by_id: strawberry.Private[str]
    environment_id: strawberry.Private[str]

    @classmethod
    def from_model(cls, version: models.TemplateVersion, *, environment_id: str) -> TemplateVersion:
        return cls(
            environment_id=environment_id,
            version=version.version,
            content=version.content,
            published_at=version.published_at,
            published_by_id=version.published_by_id,  # type: ignore[attr-defined]
        )

    @strawberry.field(
        description="The user who published it (for a key: the key's creator).",
        metadata=may_refuse("NOT_FOUND when the account is gone"),
    )
    async def published_by(self, info: Info) -> User | None:
        user = await info.context.loaders.user.load(self.published_by_id)
        if user is None:
            raise NotFound()
        access = info.context.access
        visible = access.owns(user.id) or await access.reads_emails(self.environment_id)
        return User.from_model(user, email_visible=visible)


@strawberry.type(
    description="A Jinja2 template rendered in a sandbox into documents. `content` is the "
    "draft; publishing freezes it as a numbered version, and documents are generated from the "
    "published version only."
)
class Template(Node):
    id: strawberry.ID = strawberry.field(description="Opaque template id (`tpl_...`).")
    name: str = strawberry.field(description="1 to 64 characters, unique in its environment.")
    format: TemplateFormat = strawberry.field(description="HTML, MARKDOWN or TEXT; fixed.")
    content: str = strawberry.field(
        description="The draft's Jinja2 source; editing it does not change the published version."
    )
    published_version: int | None = strawberry.field(
        description="The version documents are generated from; null when unpublished."
    )
    latest_version: int | None = strawberry.field(
        description="The highest version number frozen so far; null before the first publish."
    )
    has_unpublished_changes: bool = strawberry.field(
        description="Whether the draft differs from the latest frozen version (publishing would "
        "freeze a new one)."
    )
    created_at: datetime = strawberry.field(description="When the template was created.")
    updated_at: datetime = strawberry.field(
        description="When the draft, the name or the publication last changed."
    )
    preloaded_versions: strawberry.Private[list[models.TemplateVersion] | None]
    environment_id: strawberry.Private[str]

    @classmethod
    def from_model(
        cls, template: models.Template, *, versions: list[models.TemplateVersion] | None = None
    ) -> Template:
        return cls(
            id=strawberry.ID(template.id),
            name=template.name,
            format=template.format,
            content=template.content,
            published_version=template.published_version,
            latest_version=template.latest_version or None,
            has_unpublished_changes=template.has_unpublished_changes,
            created_at=template.created_at,
            updated_at=template.updated_at,
            preloaded_versions=versions,
            environment_id=template.environment_id,  # type: ignore[attr-defined]
        )

    @strawberry.field(description="Every published version, newest first.")
    async def versions(self) -> list[TemplateVersion]:
        found = self.preloaded_versions
        if found is None:
            found = await template_resolvers.template_versions(self.id)
        return [
            TemplateVersion.from_model(version, environment_id=self.environment_id)
            for version in found
        ]


@strawberry.type(description="One template in a page, with the cursor that points at it.")
class TemplateEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this one.")
    node: Template = strawberry.field(description="The template.")


@strawberry.type(description="A page of templates, newest first.")
class TemplateConnection:
    edges: list[TemplateEdge] = strawberry.field(description="The templates of this page.")
    page_info: PageInfo = strawberry.field(description="Where this page stands.")
    nodes: list[Template] = strawberry.field(
        description="The templates of this page (the nodes of its edges)."
    )
    page: strawberry.Private[Page[Any]]

    @strawberry.field(description=TOTAL_COUNT)
    async def total_count(self) -> int:
        return await total_count(self.page)

    @classmethod
    def from_page(cls, page: Page[models.Template]) -> TemplateConnection:
        edges = [
            TemplateEdge(
                cursor=encode_cursor(template.created_at, template.id),
                node=Template.from_model(template),
            )
            for template in page.items
        ]
        return cls(
            edges=edges,
            page_info=page_info(page, [edge.cursor for edge in edges]),
            nodes=[edge.node for edge in edges],
            page=page,
        )


@strawberry.input(description="Create a template (a draft, until it is published).")
class CreateTemplateInput:
    environment_id: strawberry.ID = strawberry.field(description="The template's environment.")
    name: str = strawberry.field(description="1 to 64 characters, unique in the environment.")
    content: str = strawberry.field(
        description="Jinja2 source, at most 256 KiB by default. Undefined variables are errors; "
        "use `{% if x is defined %}` for optional ones."
    )
    format: TemplateFormat = strawberry.field(
        description="HTML (values are escaped), MARKDOWN or TEXT. Cannot be changed later."
    )


@strawberry.input(description="Edit a template's draft; omitted fields stay as they are.")
class UpdateTemplateInput:
    id: strawberry.ID = strawberry.field(description="The template.")
    name: str | None = strawberry.field(default=None, description="New name.")
    content: str | None = strawberry.field(
        default=None, description="New draft source; the published version is not changed."
    )
