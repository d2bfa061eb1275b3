"""Analytics of one environment, by hour or day, and the reports that carry the same figures.

Documents come from `document` rows, failures from DOCUMENT_FAILED activity events, API figures
from the per-minute usage buckets plus the counts this process has not flushed yet. Each source
is read with one aggregate query grouped by (period, template or key); nothing is read per period.

The range is half-open, `[from, to)`, in UTC; periods start on whole UTC hours or days, so the
first and last periods may cover only part of theirs. Documents and failures count by their exact
instant; usage counts by the minute: a bucket counts when its minute overlaps the range.

CSV report layout (RFC 4180, UTF-8, CRLF line ends), one header row, then one row per
(period, key) with any API traffic and one row per (period, template) with any document or
failure, oldest period first, `api` rows before `documents` rows within a period:

    period_start,kind,key_id,key_name,key_prefix,template_id,template_name,requests,refused,
    unauthorized,forbidden,rate_limited,documents,failures

`kind` is `api` (key and request columns filled) or `documents` (template and document columns
filled); the other kind's columns stay empty. Names of deleted keys or templates are empty. A
text cell starting with `=`, `+`, `-`, `@`, tab or carriage return gets a leading `'` so that a
spreadsheet never runs it as a formula. Summing a column over the rows of its kind gives the
totals of the JSON report, which has exactly the shape of the GraphQL `Analytics` type.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from tortoise.expressions import RawSQL
from tortoise.functions import Count, Sum

from keyplane.access import Access
from keyplane.errors import BadUserInput
from keyplane.models import ActivityEvent, ApiKey, Document, Template, UsageBucket
from keyplane.models.activity import ActivityKind
from keyplane.permissions.rules import rule
from keyplane.resolvers import validate
from keyplane.usage.buffer import Counts, UsageBuffer, minute_of

MAX_RANGE = timedelta(days=366)
# DOCUMENT_FAILED targets read `template:tpl_… v3 Name: reason`; the first word names it.
TEMPLATE_TARGET = "template:"


class AnalyticsGranularity(StrEnum):
    HOUR = "HOUR"
    DAY = "DAY"


class ReportFormat(StrEnum):
    CSV = "CSV"
    JSON = "JSON"


STEP = {AnalyticsGranularity.HOUR: timedelta(hours=1), AnalyticsGranularity.DAY: timedelta(days=1)}

# SQL for the first word of an activity target (`template:tpl_…`).
_FIRST_WORD_SQL = {
    "sqlite": """CASE WHEN instr("target", ' ') > 0
        THEN substr("target", 1, instr("target", ' ') - 1) ELSE "target" END""",
    "postgres": """split_part("target", ' ', 1)""",
}


# --- the figures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeriodFigures:
    """Everything that happened in the environment during one period."""

    start: datetime
    documents: int
    failures: int
    usage: Counts


@dataclass(frozen=True, slots=True)
class TemplatePeriod:
    start: datetime
    documents: int
    failures: int


@dataclass(frozen=True, slots=True)
class TemplateFigures:
    template_id: str
    name: str | None  # None once the template is deleted
    documents: int
    failures: int
    periods: list[TemplatePeriod]


@dataclass(frozen=True, slots=True)
class KeyPeriod:
    start: datetime
    usage: Counts


@dataclass(frozen=True, slots=True)
class KeyFigures:
    key_id: str
    name: str | None  # None once the key is deleted
    prefix: str | None
    usage: Counts
    periods: list[KeyPeriod]


@dataclass(frozen=True, slots=True)
class Totals:
    documents: int
    failures: int
    usage: Counts


@dataclass(frozen=True, slots=True)
class Analytics:
    environment_id: str
    start: datetime
    end: datetime
    granularity: AnalyticsGranularity
    totals: Totals
    periods: list[PeriodFigures]  # every period of the range, empty ones included
    templates: list[TemplateFigures]  # templates with documents or failures, busiest first
    keys: list[KeyFigures]  # keys with traffic, busiest first
    # Failures whose log entry names no template: in totals and periods, in no template.
    unattributed_failures: dict[datetime, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    filename: str
    content_type: str
    content: str


# --- reading ------------------------------------------------------------------------------


def check_range(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start = validate.instant(start, field="from")
    end = validate.instant(end, field="to")
    if start >= end:
        raise BadUserInput("from must be before to.", field="from")
    if end - start > MAX_RANGE:
        raise BadUserInput(
            f"The range may span at most {MAX_RANGE.days} days; choose a later from or an "
            "earlier to.",
            field="to",
        )
    return start, end


def period_of(moment: datetime, granularity: AnalyticsGranularity) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment if granularity is AnalyticsGranularity.HOUR else moment.replace(hour=0)


def _periods(start: datetime, end: datetime, granularity: AnalyticsGranularity) -> list[datetime]:
    found: list[datetime] = []
    at, step = period_of(start, granularity), STEP[granularity]
    while at < end:
        found.append(at)
        at += step
    return found


def _parse_period(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _dialect() -> str:
    dialect = Document._meta.db.capabilities.dialect
    return "postgres" if dialect == "postgres" else "sqlite"


def _period_sql(column: str, granularity: AnalyticsGranularity) -> RawSQL:
    """SQL for the text `YYYY-MM-DDTHH:00:00` of the UTC period a timestamp column falls in."""
    hourly = granularity is AnalyticsGranularity.HOUR
    if _dialect() == "postgres":
        pattern = 'YYYY-MM-DD"T"HH24":00:00"' if hourly else 'YYYY-MM-DD"T00:00:00"'
        return RawSQL(f"""to_char("{column}" AT TIME ZONE 'UTC', '{pattern}')""")
    # SQLite stores instants as UTC text (`2025-01-02 03:04:05.678+00:00`).
    pattern = "%Y-%m-%dT%H:00:00" if hourly else "%Y-%m-%dT00:00:00"
    return RawSQL(f"""strftime('{pattern}', "{column}")""")


def template_of(target: str) -> str | None:
    """The template id a DOCUMENT_FAILED target names, from its first word."""
    word = target.split(" ", 1)[0].rstrip(":")
    if not word.startswith(TEMPLATE_TARGET) or len(word) == len(TEMPLATE_TARGET):
        return None
    return word.removeprefix(TEMPLATE_TARGET)


async def _documents(
    environment_id: str, start: datetime, end: datetime, granularity: AnalyticsGranularity
) -> dict[tuple[datetime, str], int]:
    rows = (
        await Document.filter(
            environment_id=environment_id, created_at__gte=start, created_at__lt=end
        )
        .annotate(period=_period_sql("created_at", granularity), n=Count("id"))
        .group_by("period", "template_id")
        .values_list("period", "template_id", "n")
    )
    return {(_parse_period(period), template_id): int(n) for period, template_id, n in rows}


async def _failures(
    environment_id: str, start: datetime, end: datetime, granularity: AnalyticsGranularity
) -> dict[tuple[datetime, str | None], int]:
    rows = (
        await ActivityEvent.filter(
            environment_id=environment_id,
            kind=ActivityKind.DOCUMENT_FAILED,
            at__gte=start,
            at__lt=end,
        )
        .annotate(
            period=_period_sql("at", granularity),
            subject=RawSQL(_FIRST_WORD_SQL[_dialect()]),
            n=Sum("count"),
        )
        .group_by("period", "subject")
        .values_list("period", "subject", "n")
    )
    found: dict[tuple[datetime, str | None], int] = defaultdict(int)
    for period, subject, n in rows:
        found[(_parse_period(period), template_of(subject))] += int(n)
    return found


async def _usage(
    buffer: UsageBuffer,
    environment_id: str,
    start: datetime,
    end: datetime,
    granularity: AnalyticsGranularity,
    key_ids: Iterable[str],
) -> dict[tuple[datetime, str], Counts]:
    """Stored buckets plus this process's pending ones, by (period, key)."""
    first_minute = minute_of(start)
    rows = (
        await UsageBucket.filter(
            environment_id=environment_id, minute__gte=first_minute, minute__lt=end
        )
        .annotate(
            period=_period_sql("minute", granularity),
            n_requests=Sum("requests"),
            n_unauthorized=Sum("unauthorized"),
            n_forbidden=Sum("forbidden"),
            n_rate_limited=Sum("rate_limited"),
        )
        .group_by("period", "key_id")
        .values_list(
            "period", "key_id", "n_requests", "n_unauthorized", "n_forbidden", "n_rate_limited"
        )
    )
    found: dict[tuple[datetime, str], Counts] = defaultdict(Counts)
    for period, key_id, requests, unauthorized, forbidden, rate_limited in rows:
        found[(_parse_period(period), key_id)].add(
            Counts(int(requests), int(unauthorized), int(forbidden), int(rate_limited))
        )
    # The buffer answers per key, so pending counts are gathered for the keys we know of: the
    # environment's keys and those with stored buckets. Counts of a key deleted before its
    # first flush show up after that flush (within one flush interval).
    if buffer.pending_buckets(environment_id=environment_id):
        for key_id in {*key_ids, *(k for _, k in found)}:
            for minute, counts in buffer.pending_buckets(
                key_id=key_id, environment_id=environment_id
            ):
                if first_minute <= minute < end:
                    found[(period_of(minute, granularity), key_id)].add(counts)
    return found


def _busiest(counts: Counts) -> tuple[int, int]:
    return (-counts.requests, -counts.refused)


async def environment_analytics(
    access: Access,
    buffer: UsageBuffer,
    *,
    environment_id: str,
    start: datetime,
    end: datetime,
    granularity: AnalyticsGranularity,
) -> Analytics:
    """The figures of one environment; needs VIEW_ANALYTICS there (NOT_FOUND out of reach)."""
    environment, _ = await access.require(rule("Query.analytics"), environment_id=environment_id)
    start, end = check_range(start, end)
    env_id = environment.id
    documents = await _documents(env_id, start, end, granularity)
    failures = await _failures(env_id, start, end, granularity)
    keys = {
        key_id: (name, prefix)
        for key_id, name, prefix in await ApiKey.filter(environment_id=env_id).values_list(
            "id", "name", "prefix"
        )
    }
    usage = await _usage(buffer, env_id, start, end, granularity, keys)
    template_ids = {t for _, t in documents} | {t for _, t in failures if t is not None}
    names: dict[str, str] = dict(
        await Template.filter(environment_id=env_id, id__in=sorted(template_ids)).values_list(
            "id", "name"
        )
    )

    period_documents: dict[datetime, int] = defaultdict(int)
    period_failures: dict[datetime, int] = defaultdict(int)
    period_usage: dict[datetime, Counts] = defaultdict(Counts)
    by_template: dict[str, dict[datetime, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0, 0])
    )
    unattributed: dict[datetime, int] = {}
    for (period, template_id), n in documents.items():
        period_documents[period] += n
        by_template[template_id][period][0] += n
    for (period, maybe_template), n in failures.items():
        period_failures[period] += n
        if maybe_template is None:
            unattributed[period] = unattributed.get(period, 0) + n
        else:
            by_template[maybe_template][period][1] += n
    by_key: dict[str, dict[datetime, Counts]] = defaultdict(dict)
    for (period, key_id), counts in usage.items():
        if counts == Counts():
            continue
        period_usage[period].add(counts)
        by_key[key_id][period] = counts

    periods = [
        PeriodFigures(
            start=at,
            documents=period_documents.get(at, 0),
            failures=period_failures.get(at, 0),
            usage=period_usage.get(at, Counts()),
        )
        for at in _periods(start, end, granularity)
    ]
    templates = [
        TemplateFigures(
            template_id=template_id,
            name=names.get(template_id),
            documents=sum(d for d, _ in spread.values()),
            failures=sum(f for _, f in spread.values()),
            periods=[TemplatePeriod(at, d, f) for at, (d, f) in sorted(spread.items())],
        )
        for template_id, spread in by_template.items()
    ]
    templates.sort(key=lambda t: (-t.documents, -t.failures, t.template_id))
    key_figures = []
    for key_id, spread in by_key.items():
        total = Counts()
        for counts in spread.values():
            total.add(counts)
        name, prefix = keys.get(key_id, (None, None))
        key_figures.append(
            KeyFigures(
                key_id=key_id,
                name=name,
                prefix=prefix,
                usage=total,
                periods=[KeyPeriod(at, counts) for at, counts in sorted(spread.items())],
            )
        )
    key_figures.sort(key=lambda k: (*_busiest(k.usage), k.key_id))
    total_usage = Counts()
    for counts in period_usage.values():
        total_usage.add(counts)
    return Analytics(
        environment_id=env_id,
        start=start,
        end=end,
        granularity=granularity,
        totals=Totals(
            documents=sum(period_documents.values()),
            failures=sum(period_failures.values()),
            usage=total_usage,
        ),
        periods=periods,
        templates=templates,
        keys=key_figures,
        unattributed_failures=unattributed,
    )


# --- reports ------------------------------------------------------------------------------


def _usage_json(counts: Counts) -> dict[str, int]:
    return {
        "requests": counts.requests,
        "refused": counts.refused,
        "unauthorized": counts.unauthorized,
        "forbidden": counts.forbidden,
        "rateLimited": counts.rate_limited,
    }


def as_json(analytics: Analytics) -> dict[str, Any]:
    """The figures in exactly the shape a query selecting every field of `Analytics` gets."""
    return {
        "environmentId": analytics.environment_id,
        "from": analytics.start.isoformat(),
        "to": analytics.end.isoformat(),
        "granularity": analytics.granularity.value,
        "totals": {
            "documents": analytics.totals.documents,
            "failures": analytics.totals.failures,
            **_usage_json(analytics.totals.usage),
        },
        "periods": [
            {
                "start": p.start.isoformat(),
                "documents": p.documents,
                "failures": p.failures,
                **_usage_json(p.usage),
            }
            for p in analytics.periods
        ],
        "templates": [
            {
                "templateId": t.template_id,
                "name": t.name,
                "documents": t.documents,
                "failures": t.failures,
                "periods": [
                    {"start": p.start.isoformat(), "documents": p.documents, "failures": p.failures}
                    for p in t.periods
                ],
            }
            for t in analytics.templates
        ],
        "keys": [
            {
                "keyId": k.key_id,
                "name": k.name,
                "prefix": k.prefix,
                **_usage_json(k.usage),
                "periods": [
                    {"start": p.start.isoformat(), **_usage_json(p.usage)} for p in k.periods
                ],
            }
            for k in analytics.keys
        ],
    }


CSV_HEADER = (
    "period_start",
    "kind",
    "key_id",
    "key_name",
    "key_prefix",
    "template_id",
    "template_name",
    "requests",
    "refused",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "documents",
    "failures",
)
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(value: str | None) -> str:
    if value is None:
        return ""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def _usage_cells(counts: Counts) -> dict[str, object]:
    return {
        "requests": counts.requests,
        "refused": counts.refused,
        "unauthorized": counts.unauthorized,
        "forbidden": counts.forbidden,
        "rate_limited": counts.rate_limited,
    }


def as_csv(analytics: Analytics) -> str:
    """The layout of the module docstring."""
    # (period, kind order, id, cells): api rows before documents rows within a period.
    rows: list[tuple[datetime, int, str, dict[str, object]]] = []
    for key in analytics.keys:
        who: dict[str, object] = {
            "kind": "api",
            "key_id": key.key_id,
            "key_name": _text_cell(key.name),
            "key_prefix": _text_cell(key.prefix),
        }
        for kp in key.periods:
            rows.append((kp.start, 0, key.key_id, who | _usage_cells(kp.usage)))
    for template in analytics.templates:
        what: dict[str, object] = {
            "kind": "documents",
            "template_id": template.template_id,
            "template_name": _text_cell(template.name),
        }
        for tp in template.periods:
            cells = what | {"documents": tp.documents, "failures": tp.failures}
            rows.append((tp.start, 1, template.template_id, cells))
    for at, failures in analytics.unattributed_failures.items():
        rows.append((at, 1, "", {"kind": "documents", "documents": 0, "failures": failures}))
    rows.sort(key=lambda row: row[:3])
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_HEADER, restval="", lineterminator="\r\n")
    writer.writeheader()
    writer.writerows({"period_start": at.isoformat(), **cells} for at, _, _, cells in rows)
    return out.getvalue()


def report_filename(analytics: Analytics, report_format: ReportFormat) -> str:
    stamp = "%Y%m%dT%H%M%SZ"
    return (
        f"keyplane-analytics-{analytics.environment_id}-{analytics.granularity.lower()}-"
        f"{analytics.start:{stamp}}-{analytics.end:{stamp}}.{report_format.lower()}"
    )


async def generate_report(
    access: Access,
    buffer: UsageBuffer,
    *,
    environment_id: str,
    start: datetime,
    end: datetime,
    granularity: AnalyticsGranularity,
    report_format: ReportFormat,
) -> Report:
    """The figures of `environment_analytics` as a CSV or JSON document (same permission)."""
    analytics = await environment_analytics(
        access,
        buffer,
        environment_id=environment_id,
        start=start,
        end=end,
        granularity=granularity,
    )
    if report_format is ReportFormat.CSV:
        return Report(
            filename=report_filename(analytics, report_format),
            content_type="text/csv; charset=utf-8",
            content=as_csv(analytics),
        )
    return Report(
        filename=report_filename(analytics, report_format),
        content_type="application/json",
        content=json.dumps(as_json(analytics), ensure_ascii=False, indent=2) + "\n",
    )
