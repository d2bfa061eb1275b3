"""The activity log: recording security-relevant events and reading them back."""

from __future__ import annotations

from datetime import datetime

from tortoise.expressions import Q

from keyplane.access import Access
from keyplane.auth.principal import AuthKind, Principal
from keyplane.errors import Forbidden, NotFound
from keyplane.models import ActivityEvent
from keyplane.models.activity import ActivityKind
from keyplane.permissions.rules import rule
from keyplane.resolvers.pagination import Page, newest_first


def actor_label(principal: Principal) -> str:
    """Who acted, as the log shows it: `user:usr_…`, `key:key_…`, `oauth:client for user:usr_…`."""
    if principal.key is not None:
        return f"key:{principal.key.key_id}"
    if principal.kind is AuthKind.OAUTH and principal.oauth is not None:
        return f"oauth:{principal.oauth.client_id} for user:{principal.user_id}"
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return "anonymous"


async def record_event(
    kind: ActivityKind,
    *,
    access: Access,
    project_id: str,
    environment_id: str | None,
    target: str,
    at: datetime,
) -> ActivityEvent:
    """Record one event by the calling principal; call it inside the mutation's transaction.

    `environment_id=None` makes a project-wide event (shown in every environment's log).
    """
    return await ActivityEvent.create(
        kind=kind,
        project_id=project_id,
        environment_id=environment_id,
        actor=actor_label(access.principal),
        target=target[:255],
        ip=access.ip,
        at=at,
    )


async def list_activity(
    access: Access,
    *,
    environment_id: str,
    first: int,
    after: str | None,
    kinds: list[ActivityKind] | None,
) -> Page[ActivityEvent]:
    environment, _ = await access.require(rule("Query.activity"), environment_id=environment_id)
    query = ActivityEvent.filter(
        Q(environment_id=environment.id)
        | Q(
            environment_id__isnull=True,
            project_id=environment.project_id,
        )
    )
    if kinds:
        query = query.filter(kind__in=list(kinds))
    return await newest_first(query, first=first, after=after, timestamp="at")


async def get_activity_event(access: Access, *, event_id: str) -> ActivityEvent:
    """One event, to whoever reads it in an environment's log (`list_activity`): a project-wide
    event shows in every environment of its project, so one readable environment suffices."""
    read = rule("Query.activity")
    access.require_authenticated()
    event = await ActivityEvent.get_or_none(id=event_id)
    if event is None:
        raise NotFound()
    if event.environment_id is not None:  # type: ignore[attr-defined]
        await access.require(read, environment_id=event.environment_id)  # type: ignore[attr-defined]
        return event
    project_id: str = event.project_id  # type: ignore[attr-defined]
    reached = await access.visible_environments(project_id)
    if not reached:
        raise NotFound()
    for environment in reached:
        held = await access.scopes_in(project_id=project_id, environment_id=environment.id)
        if held is not None and held & read.any_of:
            return event
    raise Forbidden(required_scopes=read.scopes, reason="MISSING_SCOPE")
