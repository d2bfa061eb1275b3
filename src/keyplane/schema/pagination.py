"""The Relay PageInfo of a keyset page, and the total count, shared by every connection type."""

from __future__ import annotations

from typing import Any

from strawberry.relay import PageInfo

from keyplane.resolvers.pagination import Page


def page_info(page: Page[Any], cursors: list[str]) -> PageInfo:
    """`cursors` are the page's edges' cursors, in order."""
    return PageInfo(
        has_next_page=page.has_next_page,
        has_previous_page=page.has_previous_page,
        start_cursor=cursors[0] if cursors else None,
        end_cursor=cursors[-1] if cursors else None,
    )


TOTAL_COUNT = "How many match over every page (after is ignored): one count, made only when asked."


async def total_count(page: Page[Any]) -> int:
    if page.count is None:
        raise NotImplementedError("this listing is not counted")  # every connection's page is
    return await page.count()
