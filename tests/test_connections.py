"""Every connection has `nodes` beside its `edges`, and a `totalCount` over every page.

`totalCount` counts what the listing's filters keep, whatever the page (`first`, `after`): one
COUNT query, made only when it is selected. `nodes` costs what `edges` cost: one object per
item of a page as long as `first`; `totalCount` is a number and costs nothing.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.api_key_helpers import REVOKE_KEY
from tests.helpers import Api, Tenant, new_tenant
from tests.template_helpers import generate, new_template
from tests.test_query_count import counting_queries

KEYS = """
query($id: ID!, $first: Int!, $after: String, $status: ApiKeyStatus) {
  environment(id: $id) {
    apiKeys(first: $first, after: $after, status: $status) {
      totalCount nodes { id } edges { node { id } } pageInfo { endCursor }
    }
  }
}"""

KEYS_WITHOUT_COUNT = """
query($id: ID!, $first: Int!) {
  environment(id: $id) { apiKeys(first: $first) { nodes { id } } }
}"""

KEYS_WITH_COUNT = """
query($id: ID!, $first: Int!) {
  environment(id: $id) { apiKeys(first: $first) { totalCount nodes { id } } }
}"""

KEY_EDGES = """
query($id: ID!, $first: Int!) {
  environment(id: $id) { apiKeys(first: $first) { edges { node { id } } } }
}"""

TEMPLATES = """
query($id: ID!, $published: Boolean) {
  templates(environmentId: $id, first: 1, published: $published) {
    totalCount nodes { id } edges { node { id } }
  }
}"""

DOCUMENTS = """
query($id: ID!) {
  documents(environmentId: $id, first: 1) { totalCount nodes { id } edges { node { id } } }
}"""

ACTIVITY = """
query($id: ID!, $kinds: [ActivityKind!]) {
  activity(environmentId: $id, first: 1, kinds: $kinds) {
    totalCount nodes { id } edges { node { id } }
  }
}"""


def edge_ids(connection: dict[str, Any]) -> list[str]:
    return [edge["node"]["id"] for edge in connection["edges"]]


def node_ids(connection: dict[str, Any]) -> list[str]:
    return [node["id"] for node in connection["nodes"]]


async def three_keys_one_revoked(api: Api) -> Tenant:
    owner = await new_tenant(api)
    ids = [(await api.create_key(owner.token, owner.environment_id))[0] for _ in range(3)]
    (await api.gql(REVOKE_KEY, {"id": ids[0]}, token=owner.token)).ok()
    return owner


async def test_a_page_of_keys_counts_every_key_and_lists_its_nodes(api: Api) -> None:
    # given
    owner = await three_keys_one_revoked(api)
    variables = {"id": owner.environment_id, "first": 2}

    # when
    first = (await api.gql(KEYS, variables, token=owner.token)).ok()["environment"]["apiKeys"]
    after = {**variables, "after": first["pageInfo"]["endCursor"]}
    second = (await api.gql(KEYS, after, token=owner.token)).ok()["environment"]["apiKeys"]

    # then
    assert (first["totalCount"], second["totalCount"]) == (3, 3)
    assert node_ids(first) == edge_ids(first)
    assert len(node_ids(first)) == 2
    assert node_ids(second) == edge_ids(second)
    assert len(node_ids(second)) == 1


@pytest.mark.parametrize(("status", "count"), [("REVOKED", 1), ("ACTIVE", 2), ("EXPIRED", 0)])
async def test_the_count_of_keys_keeps_the_status_filter(api: Api, status: str, count: int) -> None:
    # given
    owner = await three_keys_one_revoked(api)

    # when
    result = await api.gql(
        KEYS, {"id": owner.environment_id, "first": 1, "status": status}, token=owner.token
    )

    # then
    assert result.ok()["environment"]["apiKeys"]["totalCount"] == count


async def test_the_count_is_one_query_made_only_when_selected(api: Api) -> None:
    # given
    owner = await three_keys_one_revoked(api)
    variables = {"id": owner.environment_id, "first": 2}
    await api.gql(KEYS_WITHOUT_COUNT, variables, token=owner.token)  # warm the kept records

    # when
    with counting_queries() as without_count:
        await api.gql(KEYS_WITHOUT_COUNT, variables, token=owner.token)
    with counting_queries() as with_count:
        await api.gql(KEYS_WITH_COUNT, variables, token=owner.token)

    # then
    added = [query for query in with_count if query not in without_count]
    assert len(with_count) == len(without_count) + 1, with_count
    assert len(added) == 1
    assert "COUNT(" in added[0].upper()


async def test_templates_documents_and_activity_count_and_list_their_nodes(api: Api) -> None:
    # given: two templates (one published), one document, and their activity
    owner = await new_tenant(api)
    published = await new_template(api, owner.token, owner.environment_id, publish=True)
    await new_template(api, owner.token, owner.environment_id, name="draft")
    (await generate(api, owner.token, published, {"name": "Ada"})).ok()
    await api.create_key(owner.token, owner.environment_id)
    await api.create_key(owner.token, owner.environment_id)
    env = {"id": owner.environment_id}

    # when
    templates = await api.gql(TEMPLATES, env, token=owner.token)
    only_published = await api.gql(TEMPLATES, {**env, "published": True}, token=owner.token)
    documents = await api.gql(DOCUMENTS, env, token=owner.token)
    created = await api.gql(ACTIVITY, {**env, "kinds": ["KEY_CREATED"]}, token=owner.token)

    # then
    for result, field, count in [
        (templates, "templates", 2),
        (only_published, "templates", 1),
        (documents, "documents", 1),
        (created, "activity", 2),
    ]:
        connection = result.ok()[field]
        assert connection["totalCount"] == count
        assert node_ids(connection) == edge_ids(connection)
        assert len(node_ids(connection)) == 1


async def test_nodes_cost_as_edges_do_and_the_count_costs_nothing(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    async def requested(query: str, first: int) -> int:
        result = await api.gql(
            query, {"id": owner.environment_id, "first": first}, token=owner.token
        )
        return int(result.body["extensions"]["cost"]["requested"])

    # when
    nodes = {first: await requested(KEYS_WITHOUT_COUNT, first) for first in (10, 50)}
    counted = await requested(KEYS_WITH_COUNT, 50)
    edges = {first: await requested(KEY_EDGES, first) for first in (10, 50)}

    # then: 40 more keys, 40 more objects in `nodes` (80 in edges: an edge and its node)
    assert nodes[50] - nodes[10] == 40
    assert edges[50] - edges[10] == 80
    assert counted == nodes[50]
