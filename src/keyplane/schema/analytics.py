"""GraphQL types for an environment's analytics and the reports that carry them."""

from __future__ import annotations

from datetime import datetime

import strawberry

from keyplane.resolvers import analytics
from keyplane.resolvers.analytics import AnalyticsGranularity, ReportFormat

strawberry.enum(
    AnalyticsGranularity, description="The period of each analytics point: a UTC hour or day."
)
strawberry.enum(
    ReportFormat,
    description="CSV: one header row, one row per (period, key) with traffic and per (period, "
    "template) with documents or failures. JSON: exactly the shape of `Analytics`.",
)

_REQUESTS = "Admitted requests made with the key(s) (FORBIDDEN answers included)."
_REFUSED = "Refusals of every kind: unauthorized + forbidden + rateLimited."
_UNAUTHORIZED = "HTTP 401: a key presented after it was revoked or after it expired."
_FORBIDDEN = "Admitted requests answered FORBIDDEN (a scope the key lacks)."
_RATE_LIMITED = "HTTP 429: requests over the rate limit."
_DOCUMENTS = "Documents generated."
_FAILURES = "Document generations that failed (DOCUMENT_FAILED in the activity log)."
_START = "Start of the period (UTC); the range may cover only part of the first and last."


@strawberry.type(description="Figures over the whole range.")
class AnalyticsTotals:
    documents: int = strawberry.field(description=_DOCUMENTS)
    failures: int = strawberry.field(description=_FAILURES)
    requests: int = strawberry.field(description=_REQUESTS)
    refused: int = strawberry.field(description=_REFUSED)
    unauthorized: int = strawberry.field(description=_UNAUTHORIZED)
    forbidden: int = strawberry.field(description=_FORBIDDEN)
    rate_limited: int = strawberry.field(description=_RATE_LIMITED)

    @classmethod
    def from_totals(cls, totals: analytics.Totals) -> AnalyticsTotals:
        u = totals.usage
        return cls(
            documents=totals.documents,
            failures=totals.failures,
            requests=u.requests,
            refused=u.refused,
            unauthorized=u.unauthorized,
            forbidden=u.forbidden,
            rate_limited=u.rate_limited,
        )


@strawberry.type(description="What happened in the environment during one period.")
class AnalyticsPeriod:
    start: datetime = strawberry.field(description=_START)
    documents: int = strawberry.field(description=_DOCUMENTS)
    failures: int = strawberry.field(description=_FAILURES)
    requests: int = strawberry.field(description=_REQUESTS)
    refused: int = strawberry.field(description=_REFUSED)
    unauthorized: int = strawberry.field(description=_UNAUTHORIZED)
    forbidden: int = strawberry.field(description=_FORBIDDEN)
    rate_limited: int = strawberry.field(description=_RATE_LIMITED)

    @classmethod
    def from_figures(cls, period: analytics.PeriodFigures) -> AnalyticsPeriod:
        u = period.usage
        return cls(
            start=period.start,
            documents=period.documents,
            failures=period.failures,
            requests=u.requests,
            refused=u.refused,
            unauthorized=u.unauthorized,
            forbidden=u.forbidden,
            rate_limited=u.rate_limited,
        )


@strawberry.type(description="One template's documents and failures in one period.")
class TemplateAnalyticsPeriod:
    start: datetime = strawberry.field(description=_START)
    documents: int = strawberry.field(description=_DOCUMENTS)
    failures: int = strawberry.field(description=_FAILURES)


@strawberry.type(description="One template's documents and failures over the range.")
class TemplateAnalytics:
    template_id: strawberry.ID = strawberry.field(
        description="The template (its id stays after the template is deleted)."
    )
    name: str | None = strawberry.field(
        description="The template's current name; null once it is deleted."
    )
    documents: int = strawberry.field(description=_DOCUMENTS)
    failures: int = strawberry.field(description=_FAILURES)
    periods: list[TemplateAnalyticsPeriod] = strawberry.field(
        description="Only the periods with documents or failures, oldest first."
    )

    @classmethod
    def from_figures(cls, template: analytics.TemplateFigures) -> TemplateAnalytics:
        return cls(
            template_id=strawberry.ID(template.template_id),
            name=template.name,
            documents=template.documents,
            failures=template.failures,
            periods=[
                TemplateAnalyticsPeriod(start=p.start, documents=p.documents, failures=p.failures)
                for p in template.periods
            ],
        )


@strawberry.type(description="One key's requests and refusals in one period.")
class KeyAnalyticsPeriod:
    start: datetime = strawberry.field(description=_START)
    requests: int = strawberry.field(description=_REQUESTS)
    refused: int = strawberry.field(description=_REFUSED)
    unauthorized: int = strawberry.field(description=_UNAUTHORIZED)
    forbidden: int = strawberry.field(description=_FORBIDDEN)
    rate_limited: int = strawberry.field(description=_RATE_LIMITED)

    @classmethod
    def from_period(cls, period: analytics.KeyPeriod) -> KeyAnalyticsPeriod:
        u = period.usage
        return cls(
            start=period.start,
            requests=u.requests,
            refused=u.refused,
            unauthorized=u.unauthorized,
            forbidden=u.forbidden,
            rate_limited=u.rate_limited,
        )


@strawberry.type(description="One API key's requests and refusals over the range.")
class KeyAnalytics:
    key_id: strawberry.ID = strawberry.field(
        description="The key (its id stays in the figures after the key is deleted)."
    )
    name: str | None = strawberry.field(description="The key's current name; null once deleted.")
    prefix: str | None = strawberry.field(
        description="The key's displayable prefix (`fm_` + 8); null once deleted."
    )
    requests: int = strawberry.field(description=_REQUESTS)
    refused: int = strawberry.field(description=_REFUSED)
    unauthorized: int = strawberry.field(description=_UNAUTHORIZED)
    forbidden: int = strawberry.field(description=_FORBIDDEN)
    rate_limited: int = strawberry.field(description=_RATE_LIMITED)
    periods: list[KeyAnalyticsPeriod] = strawberry.field(
        description="Only the periods with requests or refusals, oldest first."
    )

    @classmethod
    def from_figures(cls, key: analytics.KeyFigures) -> KeyAnalytics:
        u = key.usage
        return cls(
            key_id=strawberry.ID(key.key_id),
            name=key.name,
            prefix=key.prefix,
            requests=u.requests,
            refused=u.refused,
            unauthorized=u.unauthorized,
            forbidden=u.forbidden,
            rate_limited=u.rate_limited,
            periods=[KeyAnalyticsPeriod.from_period(p) for p in key.periods],
        )


@strawberry.type(
    description="Document generation and API figures of one environment over `[from, to)`, "
    "in UTC periods. Documents and failures count by their instant; API usage by the minute "
    "(every minute that overlaps the range), this server's not-yet-flushed counts included."
)
class Analytics:
    environment_id: strawberry.ID = strawberry.field(description="The environment.")
    from_: datetime = strawberry.field(name="from", description="Start of the range (included).")
    to: datetime = strawberry.field(description="End of the range (excluded).")
    granularity: AnalyticsGranularity = strawberry.field(description="The length of a period.")
    totals: AnalyticsTotals = strawberry.field(description="Figures over the whole range.")
    periods: list[AnalyticsPeriod] = strawberry.field(
        description="Every period of the range, empty ones included, oldest first."
    )
    templates: list[TemplateAnalytics] = strawberry.field(
        description="Templates with documents or failures in the range, most documents first. "
        "A failure whose log entry names no template counts only in totals and periods."
    )
    keys: list[KeyAnalytics] = strawberry.field(
        description="Keys with requests or refusals in the range, most requests first."
    )

    @classmethod
    def from_figures(cls, figures: analytics.Analytics) -> Analytics:
        return cls(
            environment_id=strawberry.ID(figures.environment_id),
            from_=figures.start,
            to=figures.end,
            granularity=figures.granularity,
            totals=AnalyticsTotals.from_totals(figures.totals),
            periods=[AnalyticsPeriod.from_figures(p) for p in figures.periods],
            templates=[TemplateAnalytics.from_figures(t) for t in figures.templates],
            keys=[KeyAnalytics.from_figures(k) for k in figures.keys],
        )


@strawberry.type(description="A downloadable report of an environment's analytics.")
class Report:
    filename: str = strawberry.field(
        description="A file name for it: environment, granularity, range and extension."
    )
    content_type: str = strawberry.field(
        description="`text/csv; charset=utf-8` or `application/json`."
    )
    content: str = strawberry.field(description="The report itself.")

    @classmethod
    def from_report(cls, report: analytics.Report) -> Report:
        return cls(
            filename=report.filename, content_type=report.content_type, content=report.content
        )


@strawberry.input(description="Which figures to report, and how.")
class GenerateReportInput:
    environment_id: strawberry.ID = strawberry.field(description="The environment.")
    from_: datetime = strawberry.field(name="from", description="Start of the range (included).")
    to: datetime = strawberry.field(
        description="End of the range (excluded); at most 366 days after from."
    )
    format: ReportFormat = strawberry.field(description="CSV or JSON.")
    granularity: AnalyticsGranularity = strawberry.field(
        default=AnalyticsGranularity.DAY, description="The length of a period (default DAY)."
    )
