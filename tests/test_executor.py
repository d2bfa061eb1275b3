"""A document's sub-field collection is kept across requests only where no variable can change
it; every answer stays what graphql-core alone would give."""

from __future__ import annotations

import gc
import uuid

import graphql.execution.executor
import pytest
from starlette.applications import Starlette

from keyplane.schema import executor
from tests.helpers import Api

INCLUDE = "query($k: Boolean!) { viewer { kind scopes @include(if: $k) } }"
SKIP = "query($k: Boolean!) { viewer { kind ... on Viewer @skip(if: $k) { scopes } } }"
ALL_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_PROJECT", "MANAGE_TEMPLATES", "VIEW_ANALYTICS"]
FRAGMENTS = """query { viewer { ...Who alias: kind } }
fragment Who on Viewer { kind ... on Viewer { scopes } }"""


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    collect = graphql.execution.executor.collect_subfields

    def counted(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        return collect(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(graphql.execution.executor, "collect_subfields", counted)
    return calls


async def test_include_follows_each_requests_variables(api: Api) -> None:
    token = await api.sign_up()
    for include in (True, False, True, False):
        viewer = (await api.gql(INCLUDE, {"k": include}, token=token)).ok()["viewer"]
        assert ("scopes" in viewer) is include


async def test_skip_on_a_fragment_follows_each_requests_variables(api: Api) -> None:
    token = await api.sign_up()
    for skip in (False, True, False, True):
        viewer = (await api.gql(SKIP, {"k": skip}, token=token)).ok()["viewer"]
        assert ("scopes" in viewer) is not skip


async def test_fragments_and_aliases_answer_the_same_on_every_request(api: Api) -> None:
    token = await api.sign_up()
    answers = [(await api.gql(FRAGMENTS, token=token)).ok() for _ in range(3)]
    assert answers[0] == {
        "viewer": {
            "kind": "JWT",
            "scopes": ALL_SCOPES,
            "alias": "JWT",
        }
    }
    assert answers[1] == answers[0] == answers[2]


async def test_a_document_without_directives_is_collected_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a document no request has sent before
    token = await api.sign_up()
    query = f"query Fresh{uuid.uuid4().hex} {{ viewer {{ kind user {{ id email }} }} }}"
    calls = _counting(monkeypatch)

    # when
    first = (await api.gql(query, token=token)).ok()
    after_first = calls[0]
    second = (await api.gql(query, token=token)).ok()

    # then: viewer's and user's selections were collected by the first request only
    assert after_first == 2
    assert calls[0] == after_first
    assert second == first


async def test_a_document_with_a_directive_is_collected_on_every_request(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = await api.sign_up()
    calls = _counting(monkeypatch)

    await api.gql(INCLUDE, {"k": True}, token=token)
    after_first = calls[0]
    await api.gql(INCLUDE, {"k": True}, token=token)

    assert after_first == 1
    assert calls[0] == 2


async def test_kept_collections_go_when_their_document_leaves_the_cache(
    api: Api, app: Starlette
) -> None:
    # given: a document whose collections are kept
    token = await api.sign_up()
    name = f"Kept{uuid.uuid4().hex}"
    (await api.gql(f"query {name} {{ viewer {{ kind }} }}", token=token)).ok()
    assert name in _kept_operations()

    # when: the document cache lets every document go
    app.state.schema.queries.clear()
    gc.collect()

    # then
    assert name not in _kept_operations()


def _kept_operations() -> set[str]:
    """The names of the operations whose collections are kept (other tests' apps, built with
    other settings, have query caches of their own)."""
    operations = (ref() for ref, _ in executor._collected.values())
    return {op.name.value for op in operations if op is not None and op.name is not None}
