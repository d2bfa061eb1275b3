"""Documents: rendering a template's published version with data, then listing and reading."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from tortoise.transactions import in_transaction

from keyplane.access import Access
from keyplane.errors import BadUserInput
from keyplane.models import Document
from keyplane.models.activity import ActivityKind
from keyplane.permissions.rules import rule
from keyplane.render.failure import FailureReason, RenderFailed
from keyplane.render.pool import RenderPool
from keyplane.resolvers import idempotency
from keyplane.resolvers.activity import record_event
from keyplane.resolvers.pagination import Page, newest_first
from keyplane.resolvers.template import (
    autoescapes,
    describe,
    published_version,
    reachable_template,
)

# Which input a failure points at: the data when the data did not fit the template's
# expectations, else the template itself (its code ran into a limit or the sandbox).
_DATA_FAILURES = frozenset({FailureReason.UNDEFINED, FailureReason.ERROR})


def data_json(data: Any, *, max_bytes: int) -> str:
    """`data` as compact JSON text, if it is an object within the size limit."""
    if not isinstance(data, dict):
        raise BadUserInput(
            "data must be a JSON object; its keys become the template's variables.", field="data"
        )
    try:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (ValueError, TypeError, RecursionError, UnicodeEncodeError):
        raise BadUserInput("data must be valid JSON text (valid Unicode).", field="data") from None
    if size > max_bytes:
        raise BadUserInput(
            f"data is {size:,} bytes of JSON; the limit is {max_bytes:,} bytes.", field="data"
        )
    return text


async def generate_document(
    access: Access,
    renderer: RenderPool,
    *,
    template_id: str,
    data: Any,
    now: datetime,
    idempotency_key: str | None = None,
) -> Document:
    """Render the template's published version; the document belongs to the template's
    environment and records the user (and key) that made it.

    A failed rendering is recorded as DOCUMENT_FAILED and answered BAD_USER_INPUT, whatever
    the template did; input refused before rendering (data, no published version) is not.
    """
    template = await reachable_template(access, template_id, rule("Mutation.generateDocument"))
    text = data_json(data, max_bytes=renderer.limits.data_max_bytes)
    retry = idempotency.retry_of(
        access, "generateDocument", idempotency_key, template_id=template_id, data=data
    )
    if (made := await idempotency.earlier(retry, now=now)) is not None:
        return await _replayed(made)
    version = await published_version(template)
    try:
        content = await renderer.render(
            version.content, autoescape=autoescapes(template.format), data_json=text
        )
    except RenderFailed as failure:
        async with in_transaction():
            await record_event(
                ActivityKind.DOCUMENT_FAILED,
                access=access,
                project_id=template.project_id,  # type: ignore[attr-defined]
                environment_id=template.environment_id,  # type: ignore[attr-defined]
                target=f"{describe(template, version.version)}: {failure.reason}",
                at=now,
            )
        field = "data" if failure.reason in _DATA_FAILURES else "templateId"
        raise BadUserInput(failure.message, field=field) from None
    principal = access.require_authenticated()
    assert principal.user_id is not None  # a key acts for the user who created it
    user_id = principal.user_id

    async def store() -> Document:
        return await Document.create(
            environment_id=template.environment_id,  # type: ignore[attr-defined]
            template_id=template.id,
            template_version=version.version,
            format=template.format,
            content=content,
            created_by_id=user_id,
            created_by_key_id=None if principal.key is None else principal.key.key_id,
            auth_kind=principal.kind.value,
        )

    # Two identical calls at once may both render; only the first stores its document.
    return await idempotency.once(retry, now=now, work=store, made=_id_of, replay=_replayed)


def _id_of(document: Document) -> str:
    return document.id


async def _replayed(document_id: str) -> Document:
    document = await Document.get_or_none(id=document_id)
    if document is None:
        raise idempotency.gone()
    return document


async def get_document(access: Access, *, document_id: str) -> Document:
    access.require_authenticated()
    document = await Document.filter(id=document_id).select_related("environment").first()
    found, _ = await access.reachable(document, rule("Query.document"))
    return found


async def list_documents(
    access: Access, *, environment_id: str, first: int, after: str | None
) -> Page[Document]:
    environment, _ = await access.require(rule("Query.documents"), environment_id=environment_id)
    query = Document.filter(environment_id=environment.id)
    return await newest_first(query, first=first, after=after)
