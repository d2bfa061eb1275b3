"""A page of keys costs a constant number of SQL queries, whatever its size."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import Api

PAGE = """
query($env: ID!, $first: Int!) {
  environment(id: $env) {
    apiKeys(first: $first) {
      edges { node {
        id name prefix scopes status createdAt lastUsedAt totalRequests rateLimitPerMinute
        environment { id name }
        createdBy { id email }
      } }
    }
  }
}"""


def _in_usage_flusher() -> bool:
    """The background flush (each second) and prune write whenever they are due: not the
    request's queries."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        return False
    return task is not None and task.get_name() == "keyplane-usage-flusher"


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.queries: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
            if not _in_usage_flusher():
                self.queries.append(message)


@contextmanager
def counting_queries() -> Iterator[list[str]]:
    logger = logging.getLogger("tortoise.db_client")
    handler, level = _Counter(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler.queries
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_a_page_of_100_keys_costs_no_more_queries_than_a_page_of_2(api: Api) -> None:
    # given: 100 keys
    owner = await api.sign_up()
    project_id = await api.create_project(owner)
    env = await api.create_environment(owner, project_id)
    for n in range(100):
        await api.create_key(owner, env, ["VIEW_ANALYTICS"], name=f"k{n}")

    # when: the large page first, while no creator or environment has been read yet
    with counting_queries() as large:
        large_page = (await api.gql(PAGE, {"env": env, "first": 100}, token=owner)).ok()
    with counting_queries() as small:
        small_page = (await api.gql(PAGE, {"env": env, "first": 2}, token=owner)).ok()

    # then
    assert len(large_page["environment"]["apiKeys"]["edges"]) == 100
    assert len(small_page["environment"]["apiKeys"]["edges"]) == 2
    assert len(large) <= 6, large
    assert len(small) <= len(large), small
