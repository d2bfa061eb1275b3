"""Usage series for a key or an environment, from the per-minute buckets plus pending counts."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from keyplane.access import Access
from keyplane.errors import BadUserInput
from keyplane.models import ApiKey, ApiKeyScopeUse
from keyplane.models.usage import UsageBucket
from keyplane.permissions.rules import rule
from keyplane.permissions.scopes import Scope
from keyplane.resolvers import validate
from keyplane.usage.buffer import Counts, UsageBuffer, minute_of

MAX_POINTS = 10_000


class Granularity(StrEnum):
    MINUTE = "MINUTE"
    HOUR = "HOUR"
    DAY = "DAY"


STEP = {
    Granularity.MINUTE: timedelta(minutes=1),
    Granularity.HOUR: timedelta(hours=1),
    Granularity.DAY: timedelta(days=1),
}


@dataclass(frozen=True, slots=True)
class UsagePoint:
    at: datetime
    counts: Counts


def _floor(moment: datetime, granularity: Granularity) -> datetime:
    moment = minute_of(moment)
    if granularity is Granularity.MINUTE:
        return moment
    moment = moment.replace(minute=0)
    return moment if granularity is Granularity.HOUR else moment.replace(hour=0)


def check_range(
    start: datetime, end: datetime, granularity: Granularity
) -> tuple[datetime, datetime]:
    start = validate.instant(start, field="from")
    end = validate.instant(end, field="to")
    if start >= end:
        raise BadUserInput("from must be before to.", field="from")
    points = (_floor(end, granularity) - _floor(start, granularity)) / STEP[granularity] + 1
    if points > MAX_POINTS:
        raise BadUserInput(
            f"That range holds more than {MAX_POINTS} {granularity.lower()}s; "
            "choose a coarser granularity or a shorter range.",
            field="to",
        )
    return start, end


async def usage_series(
    buffer: UsageBuffer,
    *,
    start: datetime,
    end: datetime,
    granularity: Granularity,
    key_id: str | None = None,
    environment_id: str | None = None,
) -> list[UsagePoint]:
    """One point per period from `start` to `end` (empty periods included), oldest first."""
    start, end = check_range(start, end, granularity)
    query = UsageBucket.filter(minute__gte=minute_of(start), minute__lte=end)
    if key_id is not None:
        query = query.filter(key_id=key_id)
    if environment_id is not None:
        query = query.filter(environment_id=environment_id)
    rows = await query.values_list(
        "minute", "requests", "unauthorized", "forbidden", "rate_limited"
    )
    totals: dict[datetime, Counts] = defaultdict(Counts)
    for minute, requests, unauthorized, forbidden, rate_limited in rows:
        totals[_floor(minute, granularity)].add(
            Counts(requests, unauthorized, forbidden, rate_limited)
        )
    for minute, counts in buffer.pending_buckets(key_id=key_id, environment_id=environment_id):
        if minute_of(start) <= minute <= end:
            totals[_floor(minute, granularity)].add(counts)
    points = []
    at, last, step = _floor(start, granularity), _floor(end, granularity), STEP[granularity]
    while at <= last:
        points.append(UsagePoint(at=at, counts=totals.get(at, Counts())))
        at += step
    return points


async def key_usage(
    access: Access,
    buffer: UsageBuffer,
    *,
    key_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> list[UsagePoint]:
    # A key may read itself, but its usage needs a reading scope like any other key's.
    access.require_authenticated()
    await access.reachable(await ApiKey.get_or_none(id=key_id), rule("ApiKey.usage"))
    return await usage_series(buffer, start=start, end=end, granularity=granularity, key_id=key_id)


UNUSED_AFTER = timedelta(days=30)


async def scopes_used(buffer: UsageBuffer, *, key_id: str) -> dict[Scope, datetime]:
    """When the key last used each scope: as flushed, and as this process has not yet."""
    stored = await ApiKeyScopeUse.filter(key_id=key_id).values_list("scope", "last_used_at")
    used: dict[str, datetime] = {str(scope): at for scope, at in stored}
    for scope, at in buffer.pending_scope_uses(key_id).items():
        used[scope] = max(at, used.get(scope, at))
    known = {scope.value for scope in Scope}
    return {Scope(scope): at for scope, at in used.items() if scope in known}


def unused_scopes(
    granted: Iterable[Scope], used: dict[Scope, datetime], *, now: datetime
) -> list[Scope]:
    """The granted scopes not used within UNUSED_AFTER of `now`."""
    return sorted(
        scope for scope in granted if scope not in used or now - used[scope] > UNUSED_AFTER
    )


async def environment_usage(
    access: Access,
    buffer: UsageBuffer,
    *,
    environment_id: str,
    start: datetime,
    end: datetime,
    granularity: Granularity,
) -> list[UsagePoint]:
    await access.require(rule("Environment.usage"), environment_id=environment_id)
    return await usage_series(
        buffer, start=start, end=end, granularity=granularity, environment_id=environment_id
    )
