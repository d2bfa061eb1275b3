"""Request bodies over 2 MiB are refused with 413 before anything reads them, however they are
framed; bodies within the limit are served, declared or chunked."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from keyplane.body_limit import MAX_BODY_BYTES, declared_length
from tests.helpers import Api

CREATE_PROJECT = "mutation($i: CreateProjectInput!) { createProject(input: $i) { id } }"
PROJECTS = "{ projects { id } }"


def _padded(query: str, variables: dict[str, object], size: int) -> bytes:
    """A GraphQL body of exactly `size` bytes (the padding is an unused extension)."""
    body = {"query": query, "variables": variables, "extensions": {"pad": ""}}
    bare = len(json.dumps(body).encode())
    body["extensions"] = {"pad": "x" * (size - bare)}
    encoded = json.dumps(body).encode()
    assert len(encoded) == size
    return encoded


async def _chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _project_count(api: Api, token: str) -> int:
    projects: list[object] = (await api.gql(PROJECTS, token=token)).ok()["projects"]
    return len(projects)


async def test_a_body_declared_over_the_limit_is_refused_and_runs_nothing(api: Api) -> None:
    # given
    token = await api.sign_up()
    body = _padded(CREATE_PROJECT, {"i": {"name": "Big"}}, MAX_BODY_BYTES + 1)

    # when
    response = await api.client.post(
        "/graphql",
        content=body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )

    # then
    assert response.status_code == 413
    assert await _project_count(api, token) == 0


async def test_a_chunked_body_over_the_limit_is_refused_and_runs_nothing(api: Api) -> None:
    # given
    token = await api.sign_up()
    body = _padded(CREATE_PROJECT, {"i": {"name": "Big"}}, MAX_BODY_BYTES + 1)

    # when: no Content-Length, so the limit counts what arrives
    response = await api.client.post(
        "/graphql",
        content=_chunks(body),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )

    # then
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert await _project_count(api, token) == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
async def test_a_body_of_exactly_the_limit_is_served(api: Api, chunked: bool) -> None:
    # given
    token = await api.sign_up()
    body = _padded(CREATE_PROJECT, {"i": {"name": "Full"}}, MAX_BODY_BYTES)

    # when
    response = await api.client.post(
        "/graphql",
        content=_chunks(body) if chunked else body,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )

    # then
    assert response.status_code == 200
    assert response.json()["data"]["createProject"]["id"]
    assert await _project_count(api, token) == 1


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"content-length", b"42")], 42),
        ([(b"host", b"x"), (b"content-length", b"0")], 0),
        ([], None),
        ([(b"content-length", b"42"), (b"content-length", b"42")], None),
        ([(b"content-length", b"42"), (b"transfer-encoding", b"chunked")], None),
        ([(b"transfer-encoding", b"chunked"), (b"content-length", b"42")], None),
        ([(b"content-length", b"-1")], None),
        ([(b"content-length", b"4 2")], None),
        ([(b"content-length", b"")], None),
    ],
)
def test_only_one_plain_declared_length_without_chunking_is_trusted(
    headers: list[tuple[bytes, bytes]], expected: int | None
) -> None:
    assert declared_length(headers) == expected
