"""Templates: create, edit, publish numbered versions, unpublish, delete, list and read."""

from __future__ import annotations

from datetime import datetime

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from keyplane.access import Access
from keyplane.errors import BadUserInput, Conflict, NotFound
from keyplane.models import Template, TemplateVersion
from keyplane.models.activity import ActivityKind
from keyplane.models.template import TemplateFormat
from keyplane.permissions.rules import Rule, rule
from keyplane.render.failure import FailureReason, RenderFailed
from keyplane.render.pool import RenderPool
from keyplane.resolvers import validate
from keyplane.resolvers.activity import record_event
from keyplane.resolvers.pagination import Page, newest_first

NAME_TAKEN = "This environment already has a template with this name."


def describe(template: Template, version: int | None = None) -> str:
    """How the activity log names a template (and one of its versions)."""
    suffix = "" if version is None else f" v{version}"
    return f"template:{template.id}{suffix} {template.name}"


def autoescapes(template_format: TemplateFormat) -> bool:
    """HTML output escapes every printed value; Markdown and text print them as they are."""
    return template_format is TemplateFormat.HTML


async def _valid_content(
    renderer: RenderPool, content: str, *, template_format: TemplateFormat
) -> str:
    """The content if it compiles in the sandbox and fits the limit; else BAD_USER_INPUT."""
    limit = renderer.limits.template_max_bytes
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadUserInput("content must be valid Unicode text.", field="content") from None
    if size > limit:
        raise BadUserInput(
            f"content is {size:,} bytes; templates are limited to {limit:,} bytes.",
            field="content",
        )
    if "\x00" in content:
        raise BadUserInput("content must not contain NUL characters.", field="content")
    try:
        await renderer.check(content, autoescape=autoescapes(template_format))
    except RenderFailed as failure:
        if failure.reason is FailureReason.TIMEOUT:
            raise BadUserInput(
                "The template took too long to compile; simplify it.", field="content"
            ) from None
        raise BadUserInput(failure.message, field="content") from None
    return content


async def reachable_template(access: Access, template_id: str, template_rule: Rule) -> Template:
    """The template if the caller reaches its environment (else NOT_FOUND, as if missing)
    and meets the rule there (else FORBIDDEN)."""
    access.require_authenticated()
    template, _ = await access.reachable(await Template.get_or_none(id=template_id), template_rule)
    return template


def _acting_user(access: Access) -> str:
    principal = access.require_authenticated()
    # A key acts for the user who created it, so every change has a human behind it.
    assert principal.user_id is not None
    return principal.user_id


async def create_template(
    access: Access,
    renderer: RenderPool,
    *,
    environment_id: str,
    name: str,
    content: str,
    template_format: TemplateFormat,
) -> Template:
    environment, _ = await access.require(
        rule("Mutation.createTemplate"), environment_id=environment_id
    )
    name = validate.name(name)
    content = await _valid_content(renderer, content, template_format=template_format)
    try:
        async with in_transaction():
            return await Template.create(
                environment_id=environment.id,
                project_id=environment.project_id,
                name=name,
                format=template_format,
                content=content,
                created_by_id=_acting_user(access),
            )
    except IntegrityError as exc:
        raise Conflict(NAME_TAKEN) from exc


async def _latest_content(template: Template) -> str | None:
    if template.latest_version == 0:
        return None
    latest = await TemplateVersion.get_or_none(
        template_id=template.id, version=template.latest_version
    )
    return None if latest is None else latest.content


async def update_template(
    access: Access,
    renderer: RenderPool,
    *,
    template_id: str,
    name: str | None,
    content: str | None,
) -> Template:
    """Edit the draft; the published version (and the documents made from it) stay as they are
    until the next publish."""
    template = await reachable_template(access, template_id, rule("Mutation.updateTemplate"))
    if name is not None:
        name = validate.name(name)
    if content is not None:
        content = await _valid_content(renderer, content, template_format=template.format)
    if name is None and content is None:
        return template
    try:
        async with in_transaction():
            current = await Template.select_for_update().get_or_none(id=template.id)
            if current is None:
                raise NotFound()  # deleted meanwhile
            changed = ["updated_at"]
            if name is not None:
                current.name = name
                changed.append("name")
            if content is not None:
                current.content = content
                current.has_unpublished_changes = content != await _latest_content(current)
                changed += ["content", "has_unpublished_changes"]
            await current.save(update_fields=changed)
    except IntegrityError as exc:
        raise Conflict(NAME_TAKEN) from exc
    return current


async def publish_template(access: Access, *, template_id: str, now: datetime) -> Template:
    """Freeze the draft as version N+1 and make it the one documents use.

    A draft equal to the latest version is not frozen twice: publishing then re-publishes that
    version (after an unpublish) or changes nothing (when it is already live).
    """
    template = await reachable_template(access, template_id, rule("Mutation.publishTemplate"))
    try:
        async with in_transaction():
            current = await Template.select_for_update().get_or_none(id=template.id)
            if current is None:
                raise NotFound()
            if current.has_unpublished_changes or current.latest_version == 0:
                current.latest_version += 1
                await TemplateVersion.create(
                    template_id=current.id,
                    version=current.latest_version,
                    content=current.content,
                    published_by_id=_acting_user(access),
                )
            elif current.published_version == current.latest_version:
                return current
            current.published_version = current.latest_version
            current.has_unpublished_changes = False
            await current.save(
                update_fields=[
                    "latest_version",
                    "published_version",
                    "has_unpublished_changes",
                    "updated_at",
                ]
            )
            await record_event(
                ActivityKind.TEMPLATE_PUBLISHED,
                access=access,
                project_id=current.project_id,  # type: ignore[attr-defined]
                environment_id=current.environment_id,  # type: ignore[attr-defined]
                target=describe(current, current.published_version),
                at=now,
            )
    except IntegrityError as exc:
        # Two publishes raced for the same version number (PostgreSQL locks the row first).
        raise Conflict("This template was published concurrently; try again.") from exc
    return current


async def unpublish_template(access: Access, *, template_id: str) -> Template:
    """Stop documents from being generated; the frozen versions and the draft stay."""
    template = await reachable_template(access, template_id, rule("Mutation.unpublishTemplate"))
    if template.published_version is not None:
        async with in_transaction():
            await Template.filter(id=template.id).update(published_version=None)
        template.published_version = None
    return template


async def delete_template(
    access: Access, *, template_id: str
) -> tuple[Template, list[TemplateVersion]]:
    """Delete a template and its versions; its documents stay (they name it by id).

    Returns the template and its versions as they were, for the answer."""
    template = await reachable_template(access, template_id, rule("Mutation.deleteTemplate"))
    versions = await template_versions(template.id)
    async with in_transaction():
        await Template.filter(id=template.id).delete()
    return template, versions


async def get_template(access: Access, *, template_id: str) -> Template:
    return await reachable_template(access, template_id, rule("Query.template"))


async def list_templates(
    access: Access,
    *,
    environment_id: str,
    first: int,
    after: str | None,
    published: bool | None,
) -> Page[Template]:
    environment, _ = await access.require(rule("Query.templates"), environment_id=environment_id)
    query = Template.filter(environment_id=environment.id)
    if published is not None:
        query = query.filter(published_version__isnull=not published)
    return await newest_first(query, first=first, after=after)


async def template_versions(template_id: str) -> list[TemplateVersion]:
    """Every frozen version of a template, newest first (the caller has read the template)."""
    return await TemplateVersion.filter(template_id=template_id).order_by("-version")


async def published_version(template: Template) -> TemplateVersion:
    """The version documents are generated from; CONFLICT when none is published."""
    if template.published_version is None:
        raise Conflict("This template has no published version; publish it first.")
    version = await TemplateVersion.get_or_none(
        template_id=template.id, version=template.published_version
    )
    if version is None:
        raise Conflict("This template has no published version; publish it first.")
    return version
