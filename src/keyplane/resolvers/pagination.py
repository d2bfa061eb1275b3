"""Keyset pagination, newest first: cursors stay valid while rows are added or removed."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from tortoise.expressions import Q
from tortoise.models import Model
from tortoise.queryset import QuerySet

from keyplane.errors import BadUserInput
from keyplane.resolvers import validate

ID_MAX_LENGTH = 32
M = TypeVar("M", bound=Model)
T = TypeVar("T")


# Counts every row a paged query matches, whatever the page: called only when a client asks.
Count = Callable[[], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    has_next_page: bool
    has_previous_page: bool
    count: Count | None = None  # None: this listing is not counted


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = f"{created_at.isoformat()}|{row_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, field: str = "after") -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        text = base64.urlsafe_b64decode(padded.encode()).decode()
        moment, row_id = text.split("|", 1)
        if len(row_id) > ID_MAX_LENGTH:
            raise ValueError("not one of our ids")
        return validate.instant(datetime.fromisoformat(moment)), row_id
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise BadUserInput("This cursor is not one we issued.", field=field) from exc


def _page_query(
    query: QuerySet[M], *, first: int, after: str | None, timestamp: str
) -> tuple[QuerySet[M], int]:
    first = validate.page_size(first)
    if after is not None:
        moment, row_id = decode_cursor(after)
        before: dict[str, Any] = {f"{timestamp}__lt": moment}
        tied: dict[str, Any] = {timestamp: moment, "id__lt": row_id}
        query = query.filter(Q(**before) | Q(**tied))
    return query.order_by(f"-{timestamp}", "-id").limit(first + 1), first


async def newest_first(
    query: QuerySet[M], *, first: int, after: str | None, timestamp: str = "created_at"
) -> Page[M]:
    """One page of `query` ordered by (`timestamp`, id) descending."""
    paged, first = _page_query(query, first=first, after=after, timestamp=timestamp)
    return page_of(await paged, first=first, after=after, count=query.count)


def page_of(rows: list[T], *, first: int, after: str | None, count: Count | None = None) -> Page[T]:
    """`rows` holds one more than the page when there is a next page; `count` counts every
    row of the listing (one COUNT query) when asked."""
    return Page(
        items=rows[:first],
        has_next_page=len(rows) > first,
        has_previous_page=after is not None,
        count=count,
    )
