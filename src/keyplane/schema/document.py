"""GraphQL types for generated documents, their pages and the input that makes one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.relay import PageInfo
from strawberry.scalars import JSON

import keyplane.schema.template  # noqa: F401  (registers TemplateFormat)
from keyplane import models
from keyplane.context import Info
from keyplane.errors import NotFound
from keyplane.models.template import TemplateFormat
from keyplane.resolvers.pagination import Page, encode_cursor
from keyplane.schema.enums import AuthKind
from keyplane.schema.idempotency import idempotency_key_field
from keyplane.schema.node import Node
from keyplane.schema.pagination import TOTAL_COUNT, page_info, total_count
from keyplane.schema.permissions import may_refuse
from keyplane.schema.user import User


@strawberry.type(description="A document rendered from a published template version.")
class Document(Node):
    id: strawberry.ID = strawberry.field(description="Opaque document id (`doc_...`).")
    template_id: strawberry.ID = strawberry.field(
        description="The template it was rendered from (kept after that template is deleted)."
    )
    template_version: int = strawberry.field(description="The template version it used.")
    format: TemplateFormat = strawberry.field(description="The template's format.")
    content: str = strawberry.field(description="The rendered text.")
    created_at: datetime = strawberry.field(description="When it was generated.")
    auth_kind: AuthKind = strawberry.field(
        description="How its maker authenticated: API_KEY, OAUTH or JWT."
    )
    api_key_id: strawberry.ID | None = strawberry.field(
        description="The API key that generated it, when a key did."
    )
    created_by_id: strawberry.Private[str]
    environment_id: strawberry.Private[str]

    @classmethod
    def from_model(cls, document: models.Document) -> Document:
        return cls(
            id=strawberry.ID(document.id),
            template_id=strawberry.ID(document.template_id),
            template_version=document.template_version,
            format=document.format,
            content=document.content,
            created_at=document.created_at,
            auth_kind=AuthKind(document.auth_kind),
            api_key_id=(
                None
                if document.created_by_key_id is None
                else strawberry.ID(document.created_by_key_id)
            ),
            created_by_id=document.created_by_id,  # type: ignore[attr-defined]
            environment_id=document.environment_id,  # type: ignore[attr-defined]
        )

    @strawberry.field(
        description="The user who generated it (for an API key: the key's creator).",
        metadata=may_refuse("NOT_FOUND when the account is gone"),
    )
    async def created_by(self, info: Info) -> User | None:
        user = await info.context.loaders.user.load(self.created_by_id)
        if user is None:
            raise NotFound()
        access = info.context.access
        visible = access.owns(user.id) or await access.reads_emails(self.environment_id)
        return User.from_model(user, email_visible=visible)


@strawberry.type(description="One document in a page, with the cursor that points at it.")
class DocumentEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this one.")
    node: Document = strawberry.field(description="The document.")


@strawberry.type(description="A page of documents, newest first.")
class DocumentConnection:
    edges: list[DocumentEdge] = strawberry.field(description="The documents of this page.")
    page_info: PageInfo = strawberry.field(description="Where this page stands.")
    nodes: list[Document] = strawberry.field(
        description="The documents of this page (the nodes of its edges)."
    )
    page: strawberry.Private[Page[Any]]

    @strawberry.field(description=TOTAL_COUNT)
    async def total_count(self) -> int:
        return await total_count(self.page)

    @classmethod
    def from_page(cls, page: Page[models.Document]) -> DocumentConnection:
        edges = [
            DocumentEdge(
                cursor=encode_cursor(document.created_at, document.id),
                node=Document.from_model(document),
            )
            for document in page.items
        ]
        return cls(
            edges=edges,
            page_info=page_info(page, [edge.cursor for edge in edges]),
            nodes=[edge.node for edge in edges],
            page=page,
        )


@strawberry.input(description="Render a template's published version into a document.")
class GenerateDocumentInput:
    template_id: strawberry.ID = strawberry.field(
        description="The template; its latest published version is used."
    )
    data: JSON = strawberry.field(
        description="A JSON object whose keys are the template's variables; at most 1 MiB of "
        "JSON by default."
    )
    idempotency_key: str | None = idempotency_key_field()
