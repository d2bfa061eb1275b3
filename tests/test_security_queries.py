"""One request must not freeze keyplane: documents are bounded while they are read, priced,
charged, bounded again (aliases, depth, repeated selections, cost) and only then validated and
run, under a time limit. Each reproduction of the audit (issue 15) is a test here."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import graphql
import pytest

from keyplane.resolvers import project as project_resolvers
from keyplane.settings import QueryLimits, RunMode, Settings, SettingsError
from tests.helpers import Api, Result, cost

VIEWER = "{ viewer { kind } }"
KEY_PAGE = """query($e: ID!, $n: Int!) { environment(id: $e) {
  apiKeys(first: $n) { edges { node { id createdBy { id } } } } } }"""
KEY_USAGE = """query($id: ID!, $from: DateTime!, $to: DateTime!, $g: Granularity!) {
  apiKey(id: $id) { usage(from: $from, to: $to, granularity: $g) { at requests } } }"""
ENVIRONMENTS = "query($p: ID!) { project(id: $p) { environments { id name } } }"


def aliases(count: int, field: str = "viewer{kind}") -> str:
    return "{" + " ".join(f"a{i}:{field}" for i in range(count)) + "}"


def same_alias(count: int) -> str:
    """The audit's document: `a:viewer{kind}` over and over."""
    return "{" + "a:viewer{kind} " * count + "}"


def remaining(result: Result) -> int:
    return int(result.headers["X-RateLimit-Remaining"])


async def owner_with_key(api: Api) -> tuple[str, str, str, str]:
    """(dashboard token, environment id, key id, key secret)."""
    token = await api.sign_up()
    environment = await api.create_environment(token, await api.create_project(token))
    key_id, secret = await api.create_key(token, environment, ["MANAGE_PROJECT", "VIEW_ANALYTICS"])
    return token, environment, key_id, secret


# --- 1. cheap checks before expensive ones ---------------------------------------------------


async def test_a_document_of_120000_aliases_is_refused_while_it_is_read_and_charged(
    api: Api,
) -> None:
    # given: 1.8 MB, under the 2 MiB body limit
    huge = same_alias(120_000)
    assert 1_500_000 < len(huge) < 2 * 1024 * 1024
    before = await api.gql(VIEWER)

    # when
    refused = await api.gql(huge)

    # then
    assert refused.status == 200
    assert refused.data is None
    assert refused.codes == ["QUERY_TOO_COMPLEX"]
    assert "5000 tokens" in refused.errors[0]["message"]
    assert remaining(refused) == remaining(before) - 1
    assert (await api.gql(VIEWER)).ok() == {"viewer": {"kind": "ANONYMOUS"}}


async def test_the_token_limit_is_applied_while_lexing_not_after_a_tree_is_built(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given
    from keyplane.schema import query_cache

    limits: list[object] = []
    parse = graphql.parse  # what query_cache calls, before the test replaces it

    def recorded(source: str, **options: object) -> object:
        limits.append(options.get("max_lexical_tokens"))
        return parse(source, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(query_cache, "parse", recorded)

    # when
    await api.gql(aliases(10_000) + " # " + "x")

    # then
    assert limits == [5_000]


@pytest.mark.parametrize("rate_limits", ["anonymous=3/minute"])
async def test_a_client_over_its_limit_gets_429_for_a_huge_document(api: Api) -> None:
    # given
    for _ in range(3):
        (await api.gql(VIEWER)).ok()

    # when
    refused = await api.gql(same_alias(120_000))

    # then
    assert refused.status == 429
    assert refused.codes == ["RATE_LIMITED"]


async def test_thirty_aliases_run_and_thirty_one_are_refused(api: Api) -> None:
    # when
    thirty = await api.gql(aliases(30))
    thirty_one = await api.gql(aliases(31))
    thousand = await api.gql(aliases(1_000))

    # then
    assert len(thirty.ok()) == 30
    assert thirty_one.data is None
    assert thirty_one.codes == ["QUERY_TOO_COMPLEX"]
    assert thirty_one.errors[0]["message"] == (
        "The operation uses 31 aliases; at most 30 are allowed."
    )
    assert thousand.codes == ["QUERY_TOO_COMPLEX"]


async def test_aliases_inside_fragments_count_each_time_the_fragment_is_spread(api: Api) -> None:
    # given: 4 spreads of a fragment holding 8 aliases: 32
    fragment = "fragment F on Query { " + " ".join(f"b{i}: viewer {{ kind }}" for i in range(8))
    query = fragment + " } { a: viewer { kind } ...F ...F ...F ...F }"

    # when
    result = await api.gql(query)

    # then
    assert result.codes == ["QUERY_TOO_COMPLEX"]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("{ " + "viewer { kind } " * 1_000 + "}", id="one-field-1000-times"),
        pytest.param(
            "fragment F on Query { viewer { kind } } { " + "...F " * 1_000 + "}",
            id="one-fragment-spread-1000-times",
        ),
        pytest.param("{ " + "... on Query { viewer { kind } } " * 300 + "}", id="inline-fragments"),
    ],
)
async def test_a_field_selected_hundreds_of_times_is_refused_before_validation(
    api: Api, query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: graphql-core compares every pair of such selections when it validates
    from keyplane.schema import query_cache

    validated: list[object] = []
    validate = graphql.validate  # what query_cache calls, before the test replaces it

    def recorded(*args: object, **options: object) -> object:
        validated.append(args)
        return validate(*args, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(query_cache, "validate", recorded)

    # when
    result = await api.gql(query)

    # then
    assert result.codes == ["QUERY_TOO_COMPLEX"]
    assert "at most 30 are allowed" in result.errors[0]["message"]
    assert validated == []


async def test_validation_stops_after_five_errors(api: Api) -> None:
    # given: 500 unknown directives and 500 unknown fields
    query = "{ viewer " + "@nope " * 500 + "{ kind } " + " ".join(f"x{i}" for i in range(500))
    query += " }"

    # when
    result = await api.gql(query)

    # then
    assert result.data is None
    assert len(result.errors) == 6
    assert "Too many validation errors" in result.errors[-1]["message"]
    assert set(result.codes) == {"BAD_USER_INPUT"}


# --- 2. query cost ----------------------------------------------------------------------------


async def test_every_answer_carries_its_cost_and_the_maximum(api: Api) -> None:
    # when
    viewer = await api.gql(VIEWER)
    refused = await api.gql("{ projects { id } }")
    syntax = await api.gql("{ viewer {")

    # then
    assert viewer.body["extensions"] == {"cost": cost(1)}
    assert refused.body["extensions"] == {"cost": cost(10)}
    assert syntax.body["extensions"] == {"cost": cost(0)}


async def test_a_page_costs_by_its_first_read_from_each_requests_variables(api: Api) -> None:
    # given
    token, environment, _, _ = await owner_with_key(api)

    # when: one document, two page sizes
    small = await api.gql(KEY_PAGE, {"e": environment, "n": 1}, token=token)
    full = await api.gql(KEY_PAGE, {"e": environment, "n": 100}, token=token)

    # then: environment 1 + connection 1 + n x (edge 1 + node 1 + createdBy 1)
    assert small.body["extensions"]["cost"] == cost(2 + 1 * 3)
    assert full.body["extensions"]["cost"] == cost(2 + 100 * 3)
    assert len(full.ok()["environment"]["apiKeys"]["edges"]) == 1


async def test_the_longest_usage_series_is_allowed_and_three_of_them_are_too_complex(
    api: Api,
) -> None:
    # given: 10,000 minutes, the longest series served
    token, _, key_id, _ = await owner_with_key(api)
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(minutes=9_999)
    variables = {"id": key_id, "from": start.isoformat(), "to": end.isoformat(), "g": "MINUTE"}
    three = KEY_USAGE.replace(
        "usage(from: $from, to: $to, granularity: $g) { at requests }",
        " ".join(
            f"u{i}: usage(from: $from, to: $to, granularity: $g) {{ at requests }}"
            for i in range(3)
        ),
    )

    # when
    longest = await api.gql(KEY_USAGE, variables, token=token)
    too_many = await api.gql(three, variables, token=token)

    # then
    assert len(longest.ok()["apiKey"]["usage"]) == 10_000
    assert too_many.data is None
    assert too_many.codes == ["QUERY_TOO_COMPLEX"]
    assert too_many.errors[0]["message"].startswith(
        "The operation costs 30001, more than the maximum of 25000"
    )
    assert too_many.body["extensions"] == {"cost": cost(30_001)}


async def test_nested_lists_multiply_and_a_big_nesting_is_refused_before_it_runs(
    api: Api,
) -> None:
    # given: every project's environments' 100-key pages with each key's hourly usage for a day
    token = await api.sign_up()
    day = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    query = """query($from: DateTime!, $to: DateTime!) { projects { environments {
      apiKeys(first: 100) { edges { node { usage(from: $from, to: $to) { at } } } } } } }"""
    variables = {"from": (day - timedelta(hours=23)).isoformat(), "to": day.isoformat()}

    # when
    result = await api.gql(query, variables, token=token)

    # then: 10 projects x (1 + 10 environments x (1 + 1 + 100 x (1 + 1 + 24 points)))
    assert result.codes == ["QUERY_TOO_COMPLEX"]
    assert result.body["extensions"]["cost"]["requested"] == 10 * (1 + 10 * (2 + 100 * 26))


async def test_a_mutation_costs_more_than_a_query_but_is_charged_as_before(api: Api) -> None:
    # given
    token = await api.sign_up()

    # when
    created = await api.gql(
        'mutation { createProject(input: {name: "weighed"}) { id } }', token=token
    )

    # then: 10 for the mutation, 1 for the project
    assert created.body["extensions"]["cost"] == cost(11)


@pytest.mark.parametrize("query_limits", [QueryLimits(max_cost=100)])
async def test_the_maximum_cost_is_a_setting(api: Api) -> None:
    # given
    token, environment, _, _ = await owner_with_key(api)

    # when
    page = await api.gql(KEY_PAGE, {"e": environment, "n": 100}, token=token)

    # then
    assert page.codes == ["QUERY_TOO_COMPLEX"]
    assert page.errors[0]["message"].startswith(
        "The operation costs 302, more than the maximum of 100"
    )
    assert page.body["extensions"] == {"cost": cost(302, maximum=100)}


def test_the_query_limits_are_read_from_the_environment(tmp_path: Path) -> None:
    # given
    environ = {
        "KEYPLANE_ENV": "development",
        "KEYPLANE_DATA_DIR": str(tmp_path),
        "KEYPLANE_MAX_QUERY_TOKENS": "800",
        "KEYPLANE_MAX_ALIASES": "5",
        "KEYPLANE_MAX_QUERY_DEPTH": "6",
        "KEYPLANE_MAX_QUERY_COST": "1000",
        "KEYPLANE_OPERATION_TIMEOUT_SECONDS": "3",
    }

    # when
    settings = Settings.from_environ(environ)
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(
            environ | {"KEYPLANE_MAX_QUERY_COST": "0", "KEYPLANE_MAX_ALIASES": "x"}
        )

    # then
    assert settings.query_limits == QueryLimits(
        max_tokens=800, max_aliases=5, max_depth=6, max_cost=1000
    )
    assert settings.operation_timeout_seconds == 3
    assert len(refused.value.problems) == 2


# --- 3. a time limit per operation -------------------------------------------------------------


@pytest.fixture
def operation_timeout() -> float:
    return 10.0


@pytest.fixture
def query_limits() -> QueryLimits:
    return QueryLimits()


@pytest.fixture
def settings(
    settings: Settings, operation_timeout: float, mode: RunMode, query_limits: QueryLimits
) -> Settings:
    return dataclasses.replace(
        settings, operation_timeout_seconds=operation_timeout, mode=mode, query_limits=query_limits
    )


@pytest.fixture
def mode() -> RunMode:
    return RunMode.DEVELOPMENT


@pytest.mark.parametrize("operation_timeout", [0.2])
async def test_an_operation_over_its_time_limit_ends_with_a_timeout_error(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: listing projects takes a minute
    token = await api.sign_up()
    listing = project_resolvers.list_projects

    async def slow(*args: object, **kwargs: object) -> object:
        await asyncio.sleep(60)
        return await listing(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(project_resolvers, "list_projects", slow)

    # when
    result = await api.gql("{ projects { id } }", token=token)
    after = await api.gql(VIEWER, token=token)

    # then
    assert result.status == 200
    assert result.data is None
    assert result.codes == ["TIMEOUT"]
    assert result.errors[0]["message"].startswith("The operation ran longer than 0.2 s")
    assert after.ok() == {"viewer": {"kind": "JWT"}}


# --- 4. bad bodies and literals ---------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            b'{"query": "{ viewer { kind } }", "variables": {"n": ' + b"9" * 4_301 + b"}}",
            id="a-4301-digit-number",
        ),
        pytest.param(
            b'{"query": "{ viewer { kind } }", "x": [' + b"1" * 5_000 + b"]}",
            id="a-5000-digit-number-anywhere",
        ),
        pytest.param(b'{"query": "{ viewer { kind } }"', id="unfinished"),
        pytest.param(b'{"query": "\xc3\x28"}', id="invalid-utf8"),
        pytest.param(b"\xff\xfe{", id="not-text"),
    ],
)
async def test_an_undecodable_body_is_a_coded_400_charged_to_the_caller(
    api: Api, body: bytes
) -> None:
    # given
    before = await api.gql(VIEWER)

    # when
    response = await api.client.post(
        "/graphql", content=body, headers={"Content-Type": "application/json"}
    )

    # then
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "BAD_USER_INPUT", "field": "body"}
    assert int(response.headers["X-RateLimit-Remaining"]) == remaining(before) - 1


async def test_an_int_literal_of_4400_digits_is_bad_user_input(api: Api) -> None:
    # given
    token, environment, _, _ = await owner_with_key(api)
    query = (
        f'{{ environment(id: "{environment}") {{ apiKeys(first: {"9" * 4_400}) '
        "{ edges { node { id } } } } }"
    )

    # when
    result = await api.gql(query, token=token)

    # then
    assert result.status == 200
    assert result.data is None
    assert result.codes == ["BAD_USER_INPUT"]


async def test_a_variable_out_of_range_for_int_is_bad_user_input(api: Api) -> None:
    # given
    token, environment, _, _ = await owner_with_key(api)

    # when
    result = await api.gql(KEY_PAGE, {"e": environment, "n": 10**40}, token=token)

    # then
    assert result.data is None
    assert result.codes == ["BAD_USER_INPUT"]


# --- 5. introspection and suggestions in the production profile ------------------------------

INTROSPECTION = "{ __schema { queryType { name } types { name } } }"
CIRCULAR = (
    "{ __schema { types { fields { type { fields { type { fields { type { name } } } } } } } } }"
)


@pytest.mark.parametrize("mode", [RunMode.PRODUCTION])
async def test_in_production_only_a_dashboard_session_may_introspect(api: Api) -> None:
    # given
    token, _, _, secret = await owner_with_key(api)
    email = (await api.gql("{ viewer { user { email } } }", token=token)).ok()["viewer"]["user"]
    oauth = api.oauth.token(email=email["email"])

    # when
    anonymous = await api.gql(INTROSPECTION)
    keyed = await api.gql(INTROSPECTION, token=secret)
    by_oauth = await api.gql(INTROSPECTION, token=oauth)
    circular = await api.gql(CIRCULAR)
    dashboard = await api.gql(INTROSPECTION, token=token)

    # then
    for refused in (anonymous, keyed, by_oauth, circular):
        assert refused.data is None
        assert refused.codes == ["FORBIDDEN"]
    assert dashboard.ok()["__schema"]["queryType"] == {"name": "Query"}
    assert (await api.gql("{ __typename }")).ok() == {"__typename": "Query"}


async def test_in_development_anyone_may_introspect(api: Api) -> None:
    # when
    result = await api.gql(INTROSPECTION)

    # then
    assert result.ok()["__schema"]["queryType"] == {"name": "Query"}


SUGGESTING = [
    pytest.param("{ viewer { kin } }", {}, id="field"),
    pytest.param('{ apiKey(idd: "x") { id } }', {}, id="argument"),
    pytest.param("query($s: Scop) { viewer { kind } }", {}, id="type"),
    pytest.param(
        'mutation { createApiKey(input: {environmentId: "e", name: "n", scopes: [MANAGE_PROJEC]})'
        " { secret } }",
        {},
        id="enum-literal",
    ),
    pytest.param(
        'mutation($s: [Scope!]!) { createApiKey(input: {environmentId: "e", name: "n", '
        "scopes: $s}) { secret } }",
        {"s": ["MANAGE_PROJEC"]},
        id="enum-variable",
    ),
]


@pytest.mark.parametrize("mode", [RunMode.PRODUCTION])
@pytest.mark.parametrize(("query", "variables"), SUGGESTING)
async def test_in_production_no_error_suggests_a_name(
    api: Api, query: str, variables: dict[str, object]
) -> None:
    # when
    result = await api.gql(query, variables)

    # then
    assert result.errors
    assert all("Did you mean" not in error["message"] for error in result.errors)
    assert set(result.codes) == {"BAD_USER_INPUT"}


@pytest.mark.parametrize(("query", "variables"), SUGGESTING[:1])
async def test_in_development_an_unknown_field_gets_a_suggestion(
    api: Api, query: str, variables: dict[str, object]
) -> None:
    # when
    result = await api.gql(query, variables)

    # then
    assert "Did you mean" in json.dumps(result.errors)
