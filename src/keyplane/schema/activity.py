"""GraphQL types for the activity log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.relay import PageInfo

from keyplane import models
from keyplane.models.activity import ActivityKind
from keyplane.resolvers.pagination import Page, encode_cursor
from keyplane.schema.node import Node
from keyplane.schema.pagination import TOTAL_COUNT, page_info, total_count

strawberry.enum(ActivityKind, description="What happened.")


@strawberry.type(description="One security-relevant event.")
class ActivityEvent(Node):
    id: strawberry.ID = strawberry.field(description="Opaque event id.")
    kind: ActivityKind = strawberry.field(description="What happened.")
    at: datetime = strawberry.field(
        description="When it happened (for aggregated kinds: the minute's first occurrence)."
    )
    actor: str = strawberry.field(
        description="Who did it: `user:usr_…`, `key:key_…`, `oauth:<client> for user:usr_…`, "
        "or `anonymous`."
    )
    target: str = strawberry.field(
        description="What it was done to, e.g. `key:key_… (fm_AbCd1234) name` (never a secret)."
    )
    ip: str | None = strawberry.field(description="The client address, when known.")
    count: int = strawberry.field(
        description="How many times it happened (AUTH_FAILED, RATE_LIMITED and KEY_IP_DENIED are "
        "aggregated per key and minute; 1 otherwise)."
    )

    @classmethod
    def from_model(cls, event: models.ActivityEvent) -> ActivityEvent:
        return cls(
            id=strawberry.ID(event.id),
            kind=event.kind,
            at=event.at,
            actor=event.actor,
            target=event.target,
            ip=event.ip,
            count=event.count,
        )


@strawberry.type(description="One event in a page, with its cursor.")
class ActivityEventEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this event.")
    node: ActivityEvent = strawberry.field(description="The event.")


@strawberry.type(description="A page of activity, newest first.")
class ActivityEventConnection:
    edges: list[ActivityEventEdge] = strawberry.field(description="The events of this page.")
    page_info: PageInfo = strawberry.field(description="Where this page stands.")
    nodes: list[ActivityEvent] = strawberry.field(
        description="The events of this page (the nodes of its edges)."
    )
    page: strawberry.Private[Page[Any]]

    @strawberry.field(description=TOTAL_COUNT)
    async def total_count(self) -> int:
        return await total_count(self.page)

    @classmethod
    def from_page(cls, page: Page[models.ActivityEvent]) -> ActivityEventConnection:
        edges = [
            ActivityEventEdge(
                cursor=encode_cursor(event.at, event.id), node=ActivityEvent.from_model(event)
            )
            for event in page.items
        ]
        return cls(
            edges=edges,
            page_info=page_info(page, [edge.cursor for edge in edges]),
            nodes=[edge.node for edge in edges],
            page=page,
        )
