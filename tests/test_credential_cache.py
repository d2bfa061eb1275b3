"""Verified keys and sessions are kept in the process, and never outlive a change.

Each worker reuses the key rows and sessions it has read, so a repeated credential costs no
query; every change that ends or narrows one (revoke, rotate, update, delete, logOut) moves the
credentials' version on before it answers, and every worker checks that version before it
trusts what it kept. (Real worker processes: tests/test_serve.py.)
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette
from tortoise import connections

from keyplane.app import create_app
from keyplane.auth.api_key import generate_secret
from keyplane.auth.changes import FileVersion, RedisVersion
from keyplane.auth.verified import AGE_SPREAD, FreshEntries, VerifiedCredentials
from keyplane.db import is_postgres, sqlite_path
from keyplane.permissions.scopes import Role
from keyplane.settings import Settings, SettingsError
from tests import factories
from tests.factories import FAST_PASSWORDS
from tests.helpers import Api, OAuthIssuer
from tests.schema_client import execute
from tests.test_query_count import counting_queries

REDIS_URL = os.environ.get("KEYPLANE_TEST_REDIS_URL", "")
VIEWER_KEY = "{ viewer { kind apiKey { id scopes } } }"
VIEWER_USER = "{ viewer { kind user { id } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { id } }"
UPDATE_MEMBER = """
mutation($input: UpdateMemberInput!) { updateMember(input: $input) { role allEnvironments } }
"""
COUNTERS_QUERY = "SELECT id, total_requests, last_used_at FROM api_key WHERE id IN"


async def _key(api: Api, scopes: list[str] | None = None) -> tuple[str, str, str]:
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    key_id, secret = await api.create_key(owner, env, scopes or ["VIEW_ANALYTICS"])
    return owner, key_id, secret


async def _key_used_three_times_and_flushed(api: Api, app: Starlette) -> str:
    """A key's secret, after three viewer requests whose counts a usage flush committed."""
    _, _, secret = await _key(api)
    for _ in range(3):
        (await api.gql(VIEWER_KEY, token=secret)).ok()
    await app.state.services.usage.flush()
    return secret


@pytest.fixture
def keeping(app: Starlette) -> None:
    """Skips where nothing is kept: PostgreSQL without Redis has no credentials' version."""
    if not app.state.services.credentials.enabled:
        pytest.skip("no credentials' version here (PostgreSQL without Redis): nothing is kept")


@pytest.mark.usefixtures("keeping")
async def test_a_key_seen_before_is_served_without_a_query(api: Api) -> None:
    # given
    _, key_id, secret = await _key(api)
    (await api.gql(VIEWER_KEY, token=secret)).ok()

    # when
    with counting_queries() as queries:
        data = (await api.gql(VIEWER_KEY, token=secret)).ok()

    # then
    assert data["viewer"]["apiKey"]["id"] == key_id
    assert queries == []


@pytest.mark.usefixtures("keeping")
async def test_a_session_seen_before_is_served_without_a_query(api: Api) -> None:
    # given
    owner = await api.sign_up()
    user_id = await api.user_id(owner)

    # when
    with counting_queries() as queries:
        data = (await api.gql(VIEWER_USER, token=owner)).ok()

    # then
    assert data["viewer"]["user"]["id"] == user_id
    assert queries == []


@pytest.mark.parametrize(
    ("mutation", "variables"),
    [
        ("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", {}),
        ("mutation($id: ID!) { deleteApiKey(id: $id) { id } }", {}),
        (
            "mutation($id: ID!) { rotateApiKey(input: {id: $id, expireOldInSeconds: 0}) "
            "{ secret } }",
            {},
        ),
    ],
    ids=["revoke", "delete", "rotate"],
)
async def test_a_kept_key_is_refused_on_the_next_request_after_it_ends(
    api: Api, mutation: str, variables: dict[str, str]
) -> None:
    # given: a key used (and so kept) before
    owner, key_id, secret = await _key(api)
    (await api.gql(VIEWER_KEY, token=secret)).ok()

    # when
    (await api.gql(mutation, {"id": key_id, **variables}, token=owner)).ok()
    after = await api.gql(VIEWER_KEY, token=secret)

    # then
    assert after.status == 401


@pytest.mark.usefixtures("keeping")
@pytest.mark.parametrize("ending", ["revokeApiKey", "deleteApiKey"])
async def test_a_revoked_or_deleted_key_is_refused_again_without_a_query(
    api: Api, ending: str
) -> None:
    # given: a key ended, then refused once
    owner, key_id, secret = await _key(api)
    (
        await api.gql(
            f"mutation($id: ID!) {{ {ending}(id: $id) {{ id }} }}", {"id": key_id}, token=owner
        )
    ).ok()
    assert (await api.gql(VIEWER_KEY, token=secret)).status == 401

    # when
    with counting_queries() as queries:
        again = await api.gql(VIEWER_KEY, token=secret)

    # then
    assert again.status == 401
    assert queries == []


@pytest.mark.usefixtures("keeping")
async def test_an_unknown_key_is_read_again_once_the_credentials_change(api: Api) -> None:
    # given: a well-formed secret no key has, refused once
    owner, key_id, _ = await _key(api)
    unknown = generate_secret()
    assert (await api.gql(VIEWER_KEY, token=unknown)).status == 401
    with counting_queries() as remembered:
        assert (await api.gql(VIEWER_KEY, token=unknown)).status == 401

    # when: any credential changes
    (await api.gql(REVOKE, {"id": key_id}, token=owner)).ok()
    with counting_queries() as after_change:
        assert (await api.gql(VIEWER_KEY, token=unknown)).status == 401

    # then
    assert remembered == []
    assert len(after_change) == 1, after_change


async def test_narrowed_scopes_hold_from_the_next_request(api: Api) -> None:
    # given
    owner, key_id, secret = await _key(api, ["VIEW_ANALYTICS", "GENERATE_DOCUMENTS"])
    before = (await api.gql(VIEWER_KEY, token=secret)).ok()
    assert before["viewer"]["apiKey"]["scopes"] == ["GENERATE_DOCUMENTS", "VIEW_ANALYTICS"]

    # when
    (
        await api.gql(
            "mutation($id: ID!) { updateApiKey(input: {id: $id, scopes: [VIEW_ANALYTICS]}) "
            "{ id } }",
            {"id": key_id},
            token=owner,
        )
    ).ok()
    after = (await api.gql(VIEWER_KEY, token=secret)).ok()

    # then
    assert after["viewer"]["apiKey"]["scopes"] == ["VIEW_ANALYTICS"]


async def test_a_kept_session_is_refused_on_the_next_request_after_log_out(api: Api) -> None:
    # given
    owner = await api.sign_up()
    (await api.gql(VIEWER_USER, token=owner)).ok()

    # when
    (await api.gql("mutation { logOut }", token=owner)).ok()
    after = await api.gql(VIEWER_USER, token=owner)

    # then
    assert after.status == 401


async def test_a_change_made_by_another_process_is_seen_once_it_moves_the_version(
    api: Api, app: Starlette, database_url: str
) -> None:
    if is_postgres(database_url):
        pytest.skip("the SQLite file's version; PostgreSQL + Redis: tests/test_serve.py")
    path = sqlite_path(database_url)
    assert path is not None
    # given: a key this process has kept
    _, key_id, secret = await _key(api)
    (await api.gql(VIEWER_KEY, token=secret)).ok()

    # when: another process revokes it (its row, then its own handle on the version file)
    await connections.get("default").execute_query(
        "UPDATE api_key SET revoked_at = CURRENT_TIMESTAMP WHERE id = ?", [key_id]
    )
    # (until the version moves, the row this process kept is what it trusts)
    assert (await api.gql(VIEWER_KEY, token=secret)).status == 200
    other_worker = FileVersion(path.with_name(path.name + ".credentials"))
    try:
        await other_worker.advance()
    finally:
        await other_worker.close()
    after = await api.gql(VIEWER_KEY, token=secret)

    # then
    assert after.status == 401


async def test_total_requests_read_through_the_calling_key_never_go_backwards(
    api: Api, app: Starlette
) -> None:
    # given: a kept key whose counts have been flushed to the database
    secret = await _key_used_three_times_and_flushed(api, app)

    # when
    totals = [
        (await api.gql("{ viewer { apiKey { totalRequests } } }", token=secret)).ok()
        for _ in range(2)
    ]

    # then: each request counted itself and every one before it
    assert [t["viewer"]["apiKey"]["totalRequests"] for t in totals] == [4, 5]


@pytest.mark.usefixtures("keeping")
@pytest.mark.parametrize(
    ("document", "counters_read", "answer"),
    [
        pytest.param(
            "{ viewer { apiKey { totalRequests } } }",
            [True],
            # what the row now holds plus this request
            {"viewer": {"apiKey": {"totalRequests": 4}}},
            id="asked for its counters: one query, for them",
        ),
        pytest.param(
            "{ viewer { kind apiKey { name } } }",
            [],
            {"viewer": {"kind": "API_KEY", "apiKey": {"name": "server"}}},
            id="not asked for them: no query",
        ),
    ],
)
async def test_a_kept_key_reads_only_its_counters_and_only_when_asked_for_them(
    api: Api, app: Starlette, document: str, counters_read: list[bool], answer: Any
) -> None:
    # given: a kept key that made three requests, flushed to the database
    secret = await _key_used_three_times_and_flushed(api, app)

    # when
    with counting_queries() as queries:
        data = (await api.gql(document, token=secret)).ok()

    # then: the key itself is not read again
    assert [query.startswith(COUNTERS_QUERY) for query in queries] == counters_read
    assert data == answer


@pytest.mark.usefixtures("keeping")
async def test_issuing_a_key_moves_the_credentials_version(api: Api, app: Starlette) -> None:
    # given
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    credentials = app.state.services.credentials
    before = await credentials.version()

    # when
    await api.create_key(owner, env, ["VIEW_ANALYTICS"])

    # then
    assert await credentials.version() == before + 1


@pytest.mark.usefixtures("keeping")
async def test_an_update_of_a_member_that_changes_nothing_moves_nothing(app: Starlette) -> None:
    # given: a viewer of every environment
    owner = await factories.tenant(app)
    viewer = await factories.user()
    row = await factories.member(project_id=owner.project_id, user_id=viewer.id, role=Role.VIEWER)
    credentials = app.state.services.credentials
    before = await credentials.version()

    # when: asked for the role and the reach they already have
    same = {"memberId": row.id, "role": "VIEWER", "environmentIds": []}
    unchanged = await execute(app, UPDATE_MEMBER, {"input": same}, credential=owner.token)
    after_no_op = await credentials.version()
    promoted = {"memberId": row.id, "role": "DEVELOPER"}
    changed = await execute(app, UPDATE_MEMBER, {"input": promoted}, credential=owner.token)

    # then
    assert unchanged.ok() == {"updateMember": {"role": "VIEWER", "allEnvironments": True}}
    assert after_no_op == before
    assert changed.ok() == {"updateMember": {"role": "DEVELOPER", "allEnvironments": True}}
    assert await credentials.version() == before + 1


@pytest.mark.usefixtures("keeping")
async def test_a_credential_change_that_fails_moves_nothing(app: Starlette) -> None:
    # given
    credentials = app.state.services.credentials
    before = await credentials.version()

    # when
    with pytest.raises(RuntimeError):
        async with credentials.change():
            raise RuntimeError("the write failed")

    # then
    assert await credentials.version() == before


async def test_every_handle_on_the_version_file_reads_an_advance_at_once(tmp_path: Path) -> None:
    # given: two handles, as two processes have
    first = FileVersion(tmp_path / "db.sqlite3.credentials")
    second = FileVersion(tmp_path / "db.sqlite3.credentials")
    before = await second.current()

    # when
    await first.advance()

    # then
    assert await second.current() == (before or 0) + 1
    await first.close()
    await second.close()


@pytest.mark.skipif(not REDIS_URL, reason="KEYPLANE_TEST_REDIS_URL is not set")
async def test_every_worker_reads_an_advance_of_the_redis_version_at_once() -> None:
    # given: two workers' handles on one Redis
    first, second = RedisVersion(REDIS_URL), RedisVersion(REDIS_URL)
    before = await second.current()
    assert before is not None

    # when
    await first.advance()

    # then
    assert await second.current() == before + 1
    await first.close()
    await second.close()


async def test_an_unreachable_redis_bypasses_the_cache_instead_of_trusting_it() -> None:
    # given
    version = RedisVersion("redis://127.0.0.1:1/0")

    # when
    first, second = await version.current(), await version.current()

    # then: unknown, so every request reads its credential; the second asks nobody
    assert first is None
    assert second is None
    await version.close()


def test_the_longest_reuse_is_a_setting_refused_when_out_of_range(tmp_path: Path) -> None:
    # given
    environ = {
        "KEYPLANE_ENV": "development",
        "KEYPLANE_DATA_DIR": str(tmp_path),
        "KEYPLANE_CREDENTIAL_CACHE_SECONDS": "-1",
    }

    # when
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(environ)

    # then
    assert any("KEYPLANE_CREDENTIAL_CACHE_SECONDS" in p for p in refused.value.problems)
    development = {"KEYPLANE_ENV": "development", "KEYPLANE_DATA_DIR": str(tmp_path)}
    assert Settings.from_environ(development).credential_cache_seconds == 30


def test_the_cache_size_is_a_setting_refused_when_out_of_range(tmp_path: Path) -> None:
    development = {"KEYPLANE_ENV": "development", "KEYPLANE_DATA_DIR": str(tmp_path)}

    with pytest.raises(SettingsError) as refused:
        Settings.from_environ({**development, "KEYPLANE_CREDENTIAL_CACHE_SIZE": "0"})

    assert any("KEYPLANE_CREDENTIAL_CACHE_SIZE" in p for p in refused.value.problems)
    assert Settings.from_environ(development).credential_cache_size == 10_000
    sized = Settings.from_environ({**development, "KEYPLANE_CREDENTIAL_CACHE_SIZE": "500"})
    assert sized.credential_cache_size == 500


async def test_the_cache_keeps_at_most_its_size_of_keys_forgetting_the_oldest_first(
    tmp_path: Path,
) -> None:
    # given: a cache of 3 entries of a kind, under one version
    credentials = VerifiedCredentials(FileVersion(tmp_path / "version"), max_age=30, max_entries=3)

    async def load(name: str) -> str:
        return name

    # when: 5 keys are read through it
    for name in ("a", "b", "c", "d", "e"):
        await credentials.through_at(1, credentials.identities, name, partial(load, name))

    # then: the 3 latest are kept, the 2 oldest are gone
    kept = {n: credentials.identities.get(n, 1) for n in ("a", "b", "c", "d", "e")}
    assert kept == {"a": None, "b": None, "c": "c", "d": "d", "e": "e"}


async def test_with_reuse_off_every_request_reads_its_key(settings: Settings) -> None:
    # given: a server that keeps nothing
    application = create_app(
        replace(settings, credential_cache_seconds=0), passwords=FAST_PASSWORDS, migrate=False
    )
    async with LifespanManager(application):
        transport = httpx.ASGITransport(app=application, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as c:
            api = Api(c, OAuthIssuer.create(settings.data_dir / "off-jwks.json"))
            _, _, secret = await _key(api)
            (await api.gql(VIEWER_KEY, token=secret)).ok()

            # when
            with counting_queries() as queries:
                (await api.gql(VIEWER_KEY, token=secret)).ok()

    # then
    assert any("secret_hash" in q for q in queries), queries


async def test_a_change_that_cannot_move_the_version_still_stands_and_is_counted(
    api: Api, app: Starlette, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a kept key, and a version that cannot be moved (its Redis, say, is down)
    owner, key_id, secret = await _key(api)
    (await api.gql(VIEWER_KEY, token=secret)).ok()
    credentials = app.state.services.credentials

    async def unreachable() -> None:
        raise ConnectionError("version store down")

    monkeypatch.setattr(credentials._version, "advance", unreachable)

    # when
    revoked = await api.gql(
        "mutation($id: ID!) { revokeApiKey(id: $id) { status } }", {"id": key_id}, token=owner
    )
    after = await api.gql(VIEWER_KEY, token=secret)
    metrics = (await client.get("/metrics")).text

    # then: revoked, refused here at once, and the failure is visible
    assert revoked.ok()["revokeApiKey"] == {"status": "REVOKED"}
    assert after.status == 401
    expected = 1 if credentials.enabled else 0
    assert f"keyplane_credential_version_failures_total {expected}" in metrics


@pytest.mark.usefixtures("keeping")
async def test_requests_that_bring_one_unread_key_at_once_cost_one_read_of_it(api: Api) -> None:
    # given: a key this worker has not read yet
    _, key_id, secret = await _key(api)

    # when: 12 requests bring it at once
    with counting_queries() as queries:
        answers = await asyncio.gather(*(api.gql(VIEWER_KEY, token=secret) for _ in range(12)))

    # then: every one is served, and the key was read once
    assert {a.ok()["viewer"]["apiKey"]["id"] for a in answers} == {key_id}
    assert len([q for q in queries if "WHERE secret_hash" in q]) == 1


async def test_a_shared_read_serves_the_others_when_its_first_asker_goes_away(
    tmp_path: Path,
) -> None:
    # given: a read that takes a while, asked for by three requests
    credentials = VerifiedCredentials(FileVersion(tmp_path / "version"), max_age=30)
    release, reads = asyncio.Event(), []

    async def load() -> str:
        reads.append(1)
        await release.wait()
        return "row"

    def ask() -> asyncio.Task[str | None]:
        asking = credentials.through_at(1, credentials.identities, "k", load, shared=True)
        return asyncio.ensure_future(asking)

    first, second, third = ask(), ask(), ask()
    await asyncio.sleep(0)

    # when: the first goes away before the read ends
    first.cancel()
    release.set()

    # then: the others get the one read's row, and it is kept
    assert await second == await third == "row"
    assert first.cancelled()
    assert reads == [1]
    assert credentials.identities.get("k", 1) == "row"


async def test_a_failed_shared_read_fails_every_asker_and_the_next_asker_reads_again(
    tmp_path: Path,
) -> None:
    credentials = VerifiedCredentials(FileVersion(tmp_path / "version"), max_age=30)
    reads: list[int] = []

    async def failing() -> str:
        reads.append(1)
        await asyncio.sleep(0)
        raise ConnectionError("database gone")

    # given: a read that fails, asked for by two requests at once
    first = credentials.through_at(1, credentials.identities, "k", failing, shared=True)
    second = credentials.through_at(1, credentials.identities, "k", failing, shared=True)
    results = await asyncio.gather(first, second, return_exceptions=True)

    # then: both get its error from one read; the next asker reads again

    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert reads == [1]

    async def working() -> str:
        return "row"

    again = await credentials.through_at(1, credentials.identities, "k", working, shared=True)
    assert again == "row"
    assert credentials.identities.get("k", 1) == "row"


def test_entries_kept_together_leave_spread_over_the_last_fifth_of_their_reuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: 200 keys kept at one instant, each trusted for at most 30 s
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    entries: FreshEntries[str] = FreshEntries(max_age=30)
    for n in range(200):
        entries.put(f"k{n}", "row", 1)

    def kept_at(seconds: float) -> int:
        now[0] = 1000.0 + seconds
        return sum(entries.get(f"k{n}", 1) is not None for n in range(200))

    # then: all are trusted until 80 % of the reuse, none at its end, and in between some are
    # read again and some not (a key is read again, not all 200 in one instant)
    assert AGE_SPREAD == 0.2
    assert kept_at(30 * (1 - AGE_SPREAD) - 0.01) == 200
    assert 40 < kept_at(27.0) < 160
    assert kept_at(30.0) == 0
