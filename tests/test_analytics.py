"""Analytics and reports through GraphQL over HTTP: exact figures by hour and by day, who may
read them, which ranges are refused, and the CSV and JSON reports of the same figures.

Documents, DOCUMENT_FAILED events and stored usage buckets are seeded with the models (three
days ago, well inside every retention); the API figures of real traffic are checked too, half
flushed and half still pending in the usage buffer. The background flusher is slowed down to
once an hour, so each test decides when counts reach the database.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from keyplane.models import (
    ActivityEvent,
    Document,
    Member,
    MemberEnvironment,
    Template,
    UsageBucket,
)
from keyplane.models.activity import ActivityKind
from keyplane.models.base import new_id
from keyplane.models.template import TemplateFormat
from keyplane.permissions.scopes import Role
from keyplane.usage.buffer import UsageBuffer
from tests.helpers import Answer, Api, Client, Clock, OAuthIssuer, Result
from tests.schema_client import SchemaApi

HOUR, DAY = timedelta(hours=1), timedelta(days=1)

COUNTS = "requests refused unauthorized forbidden rateLimited"
ANALYTICS = f"""
query Analytics($env: ID!, $from: DateTime!, $to: DateTime!,
                $granularity: AnalyticsGranularity! = DAY) {{
  analytics(environmentId: $env, from: $from, to: $to, granularity: $granularity) {{
    environmentId from to granularity
    totals {{ documents failures {COUNTS} }}
    periods {{ start documents failures {COUNTS} }}
    templates {{ templateId name documents failures periods {{ start documents failures }} }}
    keys {{ keyId name prefix {COUNTS} periods {{ start {COUNTS} }} }}
  }}
}}
"""
LONGEST = f"""
query Longest($env: ID!, $from: DateTime!, $to: DateTime!, $granularity: AnalyticsGranularity!) {{
  analytics(environmentId: $env, from: $from, to: $to, granularity: $granularity) {{
    totals {{ documents failures {COUNTS} }}
    periods {{ start documents failures {COUNTS} }}
    keys {{ keyId name prefix {COUNTS} }}
  }}
}}
"""
REPORT = """
mutation Report($input: GenerateReportInput!) {
  generateReport(input: $input) { filename contentType content }
}
"""
CREATE_KEY = """
mutation CreateKey($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id prefix } secret }
}
"""
REVOKE_KEY = "mutation RevokeKey($id: ID!) { revokeApiKey(id: $id) { status } }"
VIEWER = "{ viewer { kind } }"
# Needs MANAGE_PROJECT or VIEW_ANALYTICS: a GENERATE_DOCUMENTS key is admitted, then refused.
LIST_KEYS = "query($id: ID!) { environment(id: $id) { apiKeys(first: 1) { edges { cursor } } } }"

CSV_HEADER = (
    "period_start,kind,key_id,key_name,key_prefix,template_id,template_name,"
    "requests,refused,unauthorized,forbidden,rate_limited,documents,failures"
)


# Each test decides when counts reach the database (`await usage.flush()`).
pytestmark = pytest.mark.usage_flush_seconds(3600)


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    id: str
    secret: str
    prefix: str


@dataclass(frozen=True)
class World:
    """Ada owns project P with environments A and B; Bob owns project Q with environment C."""

    api: Client
    ada: str
    ada_id: str
    project: str
    env_a: str
    env_b: str
    bob: str
    env_c: str


async def create_key(
    api: Client,
    token: str,
    environment_id: str,
    scopes: list[str],
    *,
    name: str = "server",
    rate_limit: int | None = None,
) -> Key:
    result = await api.gql(
        CREATE_KEY,
        {
            "input": {
                "environmentId": environment_id,
                "name": name,
                "scopes": scopes,
                "rateLimitPerMinute": rate_limit,
            }
        },
        token=token,
    )
    payload = result.ok()["createApiKey"]
    return Key(payload["apiKey"]["id"], payload["secret"], payload["apiKey"]["prefix"])


async def new_world(api: Client) -> World:
    ada = await api.sign_up("ada@example.com")
    project = await api.create_project(ada)
    bob = await api.sign_up("bob@example.com")
    return World(
        api=api,
        ada=ada,
        ada_id=await api.user_id(ada),
        project=project,
        env_a=await api.create_environment(ada, project, "A"),
        env_b=await api.create_environment(ada, project, "B"),
        bob=bob,
        env_c=await api.create_environment(bob, await api.create_project(bob), "C"),
    )


async def add_member(world: World, role: Role, *, environment_ids: list[str] | None = None) -> str:
    """A member of Ada's project (made with the model); None means every environment."""
    token = await world.api.sign_up()
    member = await Member.create(
        project_id=world.project,
        user_id=await world.api.user_id(token),
        role=role,
        all_environments=environment_ids is None,
    )
    for environment_id in environment_ids or []:
        await MemberEnvironment.create(member=member, environment_id=environment_id)
    return token


def day_start(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def iso(moment: datetime) -> str:
    return moment.isoformat()


def counts(
    requests: int = 0, unauthorized: int = 0, forbidden: int = 0, rate_limited: int = 0
) -> dict[str, int]:
    return {
        "requests": requests,
        "refused": unauthorized + forbidden + rate_limited,
        "unauthorized": unauthorized,
        "forbidden": forbidden,
        "rateLimited": rate_limited,
    }


def period(start: datetime, documents: int = 0, failures: int = 0, **usage: int) -> dict[str, Any]:
    return {"start": iso(start), "documents": documents, "failures": failures, **counts(**usage)}


async def analytics(
    api: Client, token: str | None, env: str, start: datetime, end: datetime, granularity: str
) -> Answer:
    variables = {"env": env, "from": iso(start), "to": iso(end), "granularity": granularity}
    return await api.gql(ANALYTICS, variables, token=token)


async def report(
    api: Client,
    token: str | None,
    env: str,
    start: datetime,
    end: datetime,
    report_format: str,
    granularity: str | None = None,
) -> Answer:
    given = {"environmentId": env, "from": iso(start), "to": iso(end), "format": report_format}
    if granularity is not None:
        given["granularity"] = granularity
    return await api.gql(REPORT, {"input": given}, token=token)


def assert_bad_input(result: Answer, operation: str, field: str) -> None:
    if isinstance(result, Result):
        assert result.status == 200
    assert result.data in (None, {operation: None})
    assert [e["extensions"] for e in result.errors] == [{"code": "BAD_USER_INPUT", "field": field}]


# --- the seeded environment ----------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    world: World
    day: datetime  # midnight UTC, three days ago
    reader: Key  # VIEW_ANALYTICS in A
    server: Key  # a live key of A, with stored usage
    gone_key: str  # a deleted key of A, with stored usage
    invoice: str  # a template of A
    gone_template: str  # a deleted template of A


async def seed(api: Client) -> Seeded:
    """Three days ago in A: documents, failures and usage in known hours; noise around them.

    day 0, 01:00-02:00  invoice x2, gone_template x1 documents; invoice failed once;
                        server 5 requests (1 forbidden), then 2 requests + 3 rate limited
    day 0, 05:00-06:00  invoice x1 document; gone_template failed once; gone_key 4 requests
    day 1               invoice x1 document; one failure naming no template;
                        server 7 requests + 2 unauthorized
    Outside [day 0, day 2) or outside A: more of each, which must never be counted.
    """
    world = await new_world(api)
    day = day_start(datetime.now(UTC)) - 3 * DAY
    reader = await create_key(api, world.ada, world.env_a, ["VIEW_ANALYTICS"], name="reader")
    server = await create_key(api, world.ada, world.env_a, ["GENERATE_DOCUMENTS"], name="@srv")
    gone_key = new_id("key")
    invoice = await Template.create(
        environment_id=world.env_a,
        project_id=world.project,
        name="Invoice",
        format=TemplateFormat.HTML,
        content="<p>{{ total }}</p>",
        created_by_id=world.ada_id,
    )
    elsewhere = await Template.create(
        environment_id=world.env_b,
        project_id=world.project,
        name="Invoice",
        format=TemplateFormat.TEXT,
        content="{{ total }}",
        created_by_id=world.ada_id,
    )
    gone_template = new_id("tpl")

    async def document(environment: str, template_id: str, at: datetime) -> None:
        await Document.create(
            environment_id=environment,
            template_id=template_id,
            template_version=1,
            format=TemplateFormat.HTML,
            content="<p>1</p>",
            created_by_id=world.ada_id,
            auth_kind="JWT",
            created_at=at,
        )

    async def event(environment: str, target: str, at: datetime, kind: ActivityKind) -> None:
        await ActivityEvent.create(
            project_id=world.project,
            environment_id=environment,
            kind=kind,
            at=at,
            actor=f"key:{server.id}",
            target=target,
        )

    async def failure(environment: str, target: str, at: datetime) -> None:
        await event(environment, target, at, ActivityKind.DOCUMENT_FAILED)

    async def bucket(environment: str, key_id: str, minute: datetime, **figures: Any) -> None:
        await UsageBucket.create(
            key_id=key_id, environment_id=environment, minute=minute, **figures
        )

    def at(**offset: float) -> datetime:
        return day + timedelta(**offset)

    a, b = world.env_a, world.env_b
    for template_id, moment in [
        (invoice.id, at(hours=1, minutes=10)),
        (gone_template, at(hours=1, minutes=20)),
        (invoice.id, at(hours=1, minutes=50)),
        (invoice.id, at(hours=5)),
        (invoice.id, at(days=1, minutes=30)),
    ]:
        await document(a, template_id, moment)
    await document(a, invoice.id, at(seconds=-1))  # just before the range
    await document(a, invoice.id, at(days=2))  # the range's end is excluded
    await document(b, elsewhere.id, at(hours=1))  # another environment

    await failure(a, f"template:{invoice.id} v1 Invoice: time limit", at(hours=1, minutes=30))
    await failure(a, f"template:{gone_template} v2 Old: undefined", at(hours=5, minutes=10))
    await failure(a, "render pool restarted", at(days=1, hours=3))
    await failure(a, f"template:{invoice.id} v1 Invoice: time limit", at(days=2))
    await failure(b, f"template:{elsewhere.id} v1 Invoice: size limit", at(hours=1))
    await event(
        a, f"template:{invoice.id} v1 Invoice", at(hours=1), ActivityKind.TEMPLATE_PUBLISHED
    )

    await bucket(a, server.id, at(hours=1, minutes=5), requests=5, forbidden=1)
    await bucket(a, server.id, at(hours=1, minutes=59), requests=2, rate_limited=3)
    await bucket(a, gone_key, at(hours=5), requests=4)
    await bucket(a, server.id, at(days=1, hours=10), requests=7, unauthorized=2)
    await bucket(a, server.id, at(minutes=-1), requests=100)  # before the range
    await bucket(a, server.id, at(days=2), requests=100)  # at its end
    await bucket(b, new_id("key"), at(hours=1), requests=100)  # another environment
    return Seeded(world, day, reader, server, gone_key, invoice.id, gone_template)


def seeded_by_day(s: Seeded) -> dict[str, Any]:
    """What `analytics` answers for [day 0, day 2) by DAY, and the JSON report holds."""
    d0, d1 = s.day, s.day + DAY
    return {
        "environmentId": s.world.env_a,
        "from": iso(d0),
        "to": iso(d0 + 2 * DAY),
        "granularity": "DAY",
        "totals": {
            "documents": 5,
            "failures": 3,
            **counts(requests=18, unauthorized=2, forbidden=1, rate_limited=3),
        },
        "periods": [
            period(d0, documents=4, failures=2, requests=11, forbidden=1, rate_limited=3),
            period(d1, documents=1, failures=1, requests=7, unauthorized=2),
        ],
        "templates": [
            {
                "templateId": s.invoice,
                "name": "Invoice",
                "documents": 4,
                "failures": 1,
                "periods": [
                    {"start": iso(d0), "documents": 3, "failures": 1},
                    {"start": iso(d1), "documents": 1, "failures": 0},
                ],
            },
            {
                "templateId": s.gone_template,
                "name": None,
                "documents": 1,
                "failures": 1,
                "periods": [{"start": iso(d0), "documents": 1, "failures": 1}],
            },
        ],
        "keys": [
            {
                "keyId": s.server.id,
                "name": "@srv",
                "prefix": s.server.prefix,
                **counts(requests=14, unauthorized=2, forbidden=1, rate_limited=3),
                "periods": [
                    {"start": iso(d0), **counts(requests=7, forbidden=1, rate_limited=3)},
                    {"start": iso(d1), **counts(requests=7, unauthorized=2)},
                ],
            },
            {
                "keyId": s.gone_key,
                "name": None,
                "prefix": None,
                **counts(requests=4),
                "periods": [{"start": iso(d0), **counts(requests=4)}],
            },
        ],
    }


# --- success -------------------------------------------------------------------------------


async def test_figures_by_day_count_documents_failures_and_usage_of_the_environment_only(
    schema: SchemaApi,
) -> None:
    # given
    s = await seed(schema)

    # when
    result = await analytics(schema, s.reader.secret, s.world.env_a, s.day, s.day + 2 * DAY, "DAY")

    # then
    assert result.ok() == {"analytics": seeded_by_day(s)}


async def test_figures_by_hour_cover_every_hour_and_count_instants_in_from_to_exactly(
    schema: SchemaApi,
) -> None:
    # given
    s = await seed(schema)
    start = s.day + timedelta(hours=1, minutes=30)
    end = s.day + timedelta(hours=5, minutes=5)

    # when: a range that starts and ends inside hours
    result = await analytics(schema, s.world.ada, s.world.env_a, start, end, "HOUR")

    # then: documents at 01:10 and 01:20 and the failure at 05:10 fall outside; the buckets of
    # minutes 01:59 and 05:00 overlap the range and count whole
    h = [s.day + n * HOUR for n in range(6)]
    assert result.ok() == {
        "analytics": {
            "environmentId": s.world.env_a,
            "from": iso(start),
            "to": iso(end),
            "granularity": "HOUR",
            "totals": {"documents": 2, "failures": 1, **counts(requests=6, rate_limited=3)},
            "periods": [
                period(h[1], documents=1, failures=1, requests=2, rate_limited=3),
                period(h[2]),
                period(h[3]),
                period(h[4]),
                period(h[5], documents=1, requests=4),
            ],
            "templates": [
                {
                    "templateId": s.invoice,
                    "name": "Invoice",
                    "documents": 2,
                    "failures": 1,
                    "periods": [
                        {"start": iso(h[1]), "documents": 1, "failures": 1},
                        {"start": iso(h[5]), "documents": 1, "failures": 0},
                    ],
                }
            ],
            "keys": [
                {
                    "keyId": s.gone_key,
                    "name": None,
                    "prefix": None,
                    **counts(requests=4),
                    "periods": [{"start": iso(h[5]), **counts(requests=4)}],
                },
                {
                    "keyId": s.server.id,
                    "name": "@srv",
                    "prefix": s.server.prefix,
                    **counts(requests=2, rate_limited=3),
                    "periods": [{"start": iso(h[1]), **counts(requests=2, rate_limited=3)}],
                },
            ],
        }
    }


async def test_an_environment_without_activity_has_empty_periods_and_no_keys_or_templates(
    schema: SchemaApi,
) -> None:
    # given
    world = await new_world(schema)
    day = day_start(datetime.now(UTC)) - DAY

    # when: naive instants are read as UTC
    result = await schema.gql(
        ANALYTICS,
        {"env": world.env_b, "from": "2020-01-01T00:00:00", "to": "2020-01-03T00:00:00"},
        token=world.ada,
    )
    recent = await analytics(schema, world.ada, world.env_b, day, day + HOUR, "HOUR")

    # then: granularity defaults to DAY
    zero = {"documents": 0, "failures": 0, **counts()}
    assert result.ok()["analytics"] == {
        "environmentId": world.env_b,
        "from": "2020-01-01T00:00:00+00:00",
        "to": "2020-01-03T00:00:00+00:00",
        "granularity": "DAY",
        "totals": zero,
        "periods": [
            period(datetime(2020, 1, 1, tzinfo=UTC)),
            period(datetime(2020, 1, 2, tzinfo=UTC)),
        ],
        "templates": [],
        "keys": [],
    }
    assert recent.ok()["analytics"]["periods"] == [period(day)]


async def test_api_figures_of_real_traffic_add_what_is_stored_and_what_is_still_pending(
    api: Api, clock: Clock, usage: UsageBuffer
) -> None:
    # given: four keys; every request below lands in one hour
    world = await new_world(api)
    worker = await create_key(api, world.ada, world.env_a, ["GENERATE_DOCUMENTS"], name="worker")
    batch = await create_key(api, world.ada, world.env_a, ["MANAGE_TEMPLATES"], rate_limit=2)
    old = await create_key(api, world.ada, world.env_a, ["GENERATE_DOCUMENTS"], name="old")
    reader = await create_key(api, world.ada, world.env_a, ["VIEW_ANALYTICS"], name="reader")
    (await api.gql(REVOKE_KEY, {"id": old.id}, token=world.ada)).ok()
    now = clock()
    hour = now.replace(minute=0, second=0, microsecond=0) + HOUR
    clock.advance((hour - now).total_seconds() + 1)

    # when: traffic, a flush, more traffic still in the buffer, then the reader asks
    statuses = [(await api.gql(VIEWER, token=worker.secret)).status for _ in range(3)]
    denied = await api.gql(LIST_KEYS, {"id": world.env_a}, token=worker.secret)
    limited = [(await api.gql(VIEWER, token=batch.secret)).status for _ in range(3)]
    refused = (await api.gql(VIEWER, token=old.secret)).status
    await usage.flush()
    statuses.append((await api.gql(VIEWER, token=worker.secret)).status)
    refused_again = (await api.gql(VIEWER, token=old.secret)).status
    result = await analytics(api, reader.secret, world.env_a, hour, hour + HOUR, "HOUR")

    # then: the reader's own request is counted too, as it was admitted before it ran
    assert (statuses, denied.codes, limited) == ([200] * 4, ["FORBIDDEN"], [200, 200, 429])
    assert (refused, refused_again) == (401, 401)
    figures = result.ok()["analytics"]
    assert figures["periods"] == [
        period(hour, requests=8, unauthorized=2, forbidden=1, rate_limited=1)
    ]
    assert figures["keys"] == [
        {
            "keyId": key.id,
            "name": name,
            "prefix": key.prefix,
            **key_counts,
            "periods": [{"start": iso(hour), **key_counts}],
        }
        for key, name, key_counts in [
            (worker, "worker", counts(requests=5, forbidden=1)),
            (batch, "server", counts(requests=2, rate_limited=1)),
            (reader, "reader", counts(requests=1)),
            (old, "old", counts(unauthorized=2)),
        ]
    ]


# --- who may read them ---------------------------------------------------------------------


async def test_without_credentials_both_operations_answer_unauthenticated(api: Api) -> None:
    # given
    world = await new_world(api)
    day = day_start(datetime.now(UTC))

    # when
    read = await analytics(api, None, world.env_a, day, day + DAY, "DAY")
    written = await report(api, None, world.env_a, day, day + DAY, "CSV")

    # then
    assert isinstance(read, Result)  # over HTTP
    assert isinstance(written, Result)
    assert (read.status, read.data, read.codes) == (200, {"analytics": None}, ["UNAUTHENTICATED"])
    assert (written.status, written.data, written.codes) == (
        200,
        {"generateReport": None},
        ["UNAUTHENTICATED"],
    )


@pytest.mark.parametrize(
    ("scope", "code"),
    [
        ("VIEW_ANALYTICS", None),
        ("GENERATE_DOCUMENTS", "FORBIDDEN"),
        ("MANAGE_TEMPLATES", "FORBIDDEN"),
        ("MANAGE_PROJECT", "FORBIDDEN"),
    ],
)
async def test_only_a_key_with_view_analytics_reads_analytics_and_reports(
    schema: SchemaApi, scope: str, code: str | None
) -> None:
    # given
    world = await new_world(schema)
    key = await create_key(schema, world.ada, world.env_a, [scope])
    day = day_start(datetime.now(UTC))

    # when
    read = await analytics(schema, key.secret, world.env_a, day, day + DAY, "DAY")
    written = await report(schema, key.secret, world.env_a, day, day + DAY, "JSON")

    # then
    assert (read.codes, written.codes) == (([code], [code]) if code else ([], []))
    if code is not None:
        assert (read.data, written.data) == ({"analytics": None}, {"generateReport": None})


@pytest.mark.parametrize(
    ("role", "oauth_scope", "code"),
    [
        (Role.VIEWER, None, None),
        (Role.DEVELOPER, None, None),
        (None, "analytics:view", None),
        (None, "project:manage documents:generate templates:manage", "FORBIDDEN"),
    ],
)
async def test_members_and_tokens_read_analytics_with_view_analytics(
    schema: SchemaApi,
    oauth_issuer: OAuthIssuer,
    role: Role | None,
    oauth_scope: str | None,
    code: str | None,
) -> None:
    # given: a member with that role, or Ada through an OAuth token with that scope
    world = await new_world(schema)
    if oauth_scope is None:
        assert role is not None
        token = await add_member(world, role)
    else:
        token = oauth_issuer.token(sub="ada-at-issuer", email="ada@example.com", scope=oauth_scope)
    day = day_start(datetime.now(UTC))

    # when
    read = await analytics(schema, token, world.env_a, day, day + DAY, "DAY")
    written = await report(schema, token, world.env_a, day, day + DAY, "CSV")

    # then
    assert (read.codes, written.codes) == (([code], [code]) if code else ([], []))


async def test_another_environment_or_project_answers_exactly_like_a_missing_one(
    schema: SchemaApi,
) -> None:
    # given: a reader key of A, a member limited to A, and Bob (owner of another project)
    world = await new_world(schema)
    reader = await create_key(schema, world.ada, world.env_a, ["VIEW_ANALYTICS"])
    limited = await add_member(world, Role.ADMIN, environment_ids=[world.env_a])
    day = day_start(datetime.now(UTC))
    missing = new_id("env")

    async def outcomes(token: str, env: str) -> tuple[Any, Any]:
        read = await analytics(schema, token, env, day, day + DAY, "DAY")
        written = await report(schema, token, env, day, day + DAY, "CSV")
        return (
            {"data": read.data, "errors": read.errors},
            {"data": written.data, "errors": written.errors},
        )

    # when
    answers = {
        "key, other environment": await outcomes(reader.secret, world.env_b),
        "key, other project": await outcomes(reader.secret, world.env_c),
        "limited member, other environment": await outcomes(limited, world.env_b),
        "limited member, other project": await outcomes(limited, world.env_c),
        "owner, other project": await outcomes(world.bob, world.env_a),
    }
    missing_answer = await outcomes(world.ada, missing)

    # then
    for read, written in [*answers.values(), missing_answer]:
        assert read["data"] == {"analytics": None}
        assert [e["extensions"] for e in read["errors"]] == [{"code": "NOT_FOUND"}]
        assert written["data"] == {"generateReport": None}
        assert [e["extensions"] for e in written["errors"]] == [{"code": "NOT_FOUND"}]
    assert {
        name: (read["errors"][0]["message"], written["errors"][0]["message"])
        for name, (read, written) in answers.items()
    } == {
        name: (missing_answer[0]["errors"][0]["message"], missing_answer[1]["errors"][0]["message"])
        for name in answers
    }


# --- bad input -----------------------------------------------------------------------------


async def test_a_reversed_or_empty_range_is_refused_naming_from(schema: SchemaApi) -> None:
    # given
    world = await new_world(schema)
    day = day_start(datetime.now(UTC))

    # when
    reversed_read = await analytics(schema, world.ada, world.env_a, day + DAY, day, "DAY")
    empty_read = await analytics(schema, world.ada, world.env_a, day, day, "HOUR")
    reversed_report = await report(schema, world.ada, world.env_a, day + HOUR, day, "CSV")

    # then
    assert_bad_input(reversed_read, "analytics", "from")
    assert_bad_input(empty_read, "analytics", "from")
    assert_bad_input(reversed_report, "generateReport", "from")


async def test_a_range_longer_than_366_days_is_refused_naming_to(schema: SchemaApi) -> None:
    # given
    world = await new_world(schema)
    end = day_start(datetime.now(UTC))
    start = end - 366 * DAY

    # when
    too_long = await analytics(
        schema, world.ada, world.env_a, start - timedelta(seconds=1), end, "DAY"
    )
    too_long_report = await report(schema, world.ada, world.env_a, start - HOUR, end, "JSON")
    variables = {"env": world.env_a, "from": iso(start), "to": iso(end), "granularity": "HOUR"}
    longest = await schema.gql(LONGEST, variables, token=world.ada)
    # Every key's and template's hourly periods over a year: up to 10 x 8,784 each, by the
    # query cost's estimate (README, "Query limits"), more than one operation may ask for.
    every_series = await analytics(schema, world.ada, world.env_a, start, end, "HOUR")

    # then
    assert_bad_input(too_long, "analytics", "to")
    assert_bad_input(too_long_report, "generateReport", "to")
    assert len(longest.ok()["analytics"]["periods"]) == 366 * 24
    assert every_series.codes == ["QUERY_TOO_COMPLEX"]


async def test_minute_and_unknown_values_are_not_granularities_or_formats(
    schema: SchemaApi,
) -> None:
    # given
    world = await new_world(schema)
    day = day_start(datetime.now(UTC))

    # when
    minute = await analytics(schema, world.ada, world.env_a, day, day + HOUR, "MINUTE")
    minute_report = await report(schema, world.ada, world.env_a, day, day + HOUR, "CSV", "MINUTE")
    xml_report = await report(schema, world.ada, world.env_a, day, day + HOUR, "XML")
    not_an_instant = await schema.gql(
        ANALYTICS, {"env": world.env_a, "from": "yesterday", "to": iso(day)}, token=world.ada
    )

    # then
    assert_bad_input(minute, "analytics", "granularity")
    assert_bad_input(minute_report, "generateReport", "input")
    assert_bad_input(xml_report, "generateReport", "input")
    assert_bad_input(not_an_instant, "analytics", "from")


# --- reports -------------------------------------------------------------------------------


async def test_the_csv_report_has_one_row_per_period_and_key_and_per_period_and_template(
    schema: SchemaApi,
) -> None:
    # given
    s = await seed(schema)
    d0, d1, d2 = s.day, s.day + DAY, s.day + 2 * DAY

    # when
    result = await report(schema, s.reader.secret, s.world.env_a, d0, d2, "CSV")

    # then
    generated = result.ok()["generateReport"]
    stamp = "%Y%m%dT%H%M%SZ"
    assert generated["filename"] == (
        f"keyplane-analytics-{s.world.env_a}-day-{d0:{stamp}}-{d2:{stamp}}.csv"
    )
    assert generated["contentType"] == "text/csv; charset=utf-8"
    # The key's name starts with `@`: quoted with `'` so that no spreadsheet runs it.
    srv, gone, inv, old = s.server, s.gone_key, s.invoice, s.gone_template
    expected = [
        CSV_HEADER,
        f"{iso(d0)},api,{gone},,,,,4,0,0,0,0,,",
        f"{iso(d0)},api,{srv.id},'@srv,{srv.prefix},,,7,4,0,1,3,,",
        f"{iso(d0)},documents,,,,{inv},Invoice,,,,,,3,1",
        f"{iso(d0)},documents,,,,{old},,,,,,,1,1",
        f"{iso(d1)},api,{srv.id},'@srv,{srv.prefix},,,7,2,2,0,0,,",
        f"{iso(d1)},documents,,,,,,,,,,,0,1",
        f"{iso(d1)},documents,,,,{inv},Invoice,,,,,,1,0",
    ]
    expected[1:3] = sorted(expected[1:3])  # rows of a period are in id order
    expected[3:5] = sorted(expected[3:5])
    assert generated["content"] == "\r\n".join(expected) + "\r\n"
    rows = list(csv.DictReader(io.StringIO(generated["content"])))
    assert sum(int(r["requests"]) for r in rows if r["kind"] == "api") == 18
    assert sum(int(r["failures"]) for r in rows if r["kind"] == "documents") == 3


async def test_the_json_report_holds_exactly_what_analytics_answers(schema: SchemaApi) -> None:
    # given
    s = await seed(schema)
    d0, d2 = s.day, s.day + 2 * DAY
    hourly = await analytics(schema, s.reader.secret, s.world.env_a, d0, d2, "HOUR")

    # when
    by_day = await report(schema, s.reader.secret, s.world.env_a, d0, d2, "JSON")
    by_hour = await report(schema, s.reader.secret, s.world.env_a, d0, d2, "JSON", "HOUR")

    # then
    generated = by_day.ok()["generateReport"]
    stamp = "%Y%m%dT%H%M%SZ"
    assert generated["filename"] == (
        f"keyplane-analytics-{s.world.env_a}-day-{d0:{stamp}}-{d2:{stamp}}.json"
    )
    assert generated["contentType"] == "application/json"
    assert json.loads(generated["content"]) == seeded_by_day(s)
    hourly_figures = hourly.ok()["analytics"]
    assert json.loads(by_hour.ok()["generateReport"]["content"]) == hourly_figures
    assert len(hourly_figures["periods"]) == 48
