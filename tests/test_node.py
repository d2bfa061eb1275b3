"""Relay object identification: `node(id)` and `nodes(ids)` answer as the typed lookups do.

The prefixed ids are the node ids. Each id is answered by the lookup of its type, with the
same permission checks: the same object, or null with the same error, for every caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from keyplane.models import ActivityEvent
from keyplane.models.base import new_id
from keyplane.permissions.scopes import Role
from tests.factories import add_member
from tests.helpers import Api, Result, new_tenant
from tests.template_helpers import generate, new_template

NODE = "query($id: ID!) { node(id: $id) { __typename id } }"
NODES = "query($ids: [ID!]!) { nodes(ids: $ids) { __typename id } }"

# The typed lookup of each type, selecting `id`; `{}` is the lookup's field.
TYPED = {
    "Project": "query($id: ID!) { project(id: $id) { id } }",
    "Environment": "query($id: ID!) { environment(id: $id) { id } }",
    "ApiKey": "query($id: ID!) { apiKey(id: $id) { id } }",
    "Template": "query($id: ID!) { template(id: $id) { id } }",
    "Document": "query($id: ID!) { document(id: $id) { id } }",
}


@dataclass
class World:
    ids: dict[str, str]  # type name -> id of one object of the owner's project
    callers: dict[str, str | None]  # label -> credential


async def build_world(api: Api) -> World:
    owner = await new_tenant(api)
    stranger = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    template_id = await new_template(api, owner.token, owner.environment_id, publish=True)
    document = await generate(api, owner.token, template_id, {"name": "Ada"})
    event = await ActivityEvent.filter(environment_id=owner.environment_id).first()
    assert event is not None
    callers: dict[str, str | None] = {"owner": owner.token, "stranger": stranger.token}
    for scope in ("GENERATE_DOCUMENTS", "MANAGE_TEMPLATES", "VIEW_ANALYTICS", "MANAGE_PROJECT"):
        _, callers[f"key:{scope}"] = await api.create_key(
            owner.token, owner.environment_id, [scope]
        )
    callers["developer"] = await add_member(api, owner.project_id, Role.DEVELOPER)
    callers["anonymous"] = None
    return World(
        ids={
            "Project": owner.project_id,
            "Environment": owner.environment_id,
            "ApiKey": key_id,
            "Template": template_id,
            "Document": document.ok()["generateDocument"]["id"],
            "Member": owner.member_id,
            "ActivityEvent": event.id,
            "User": owner.user_id,
        },
        callers=callers,
    )


def answer(result: Result) -> tuple[Any, list[tuple[str, str | None]]]:
    """The one root field's value and the (message, code) of each error, path aside."""
    assert result.status == 200, result.body
    [value] = result.data.values()
    return value, [(e["message"], e["extensions"]["code"]) for e in result.errors]


async def test_node_answers_every_caller_exactly_as_the_typed_lookup(api: Api) -> None:
    # given
    world = await build_world(api)

    for type_name, document in TYPED.items():
        object_id = world.ids[type_name]
        for missing in (False, True):
            target = new_id(object_id.split("_")[0]) if missing else object_id
            for label, credential in world.callers.items():
                # when
                typed = answer(await api.gql(document, {"id": target}, token=credential))
                found = answer(await api.gql(NODE, {"id": target}, token=credential))

                # then
                value, errors = found
                if value is not None:
                    assert value.pop("__typename") == type_name
                assert (value, errors) == typed, (type_name, missing, label)


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("owner", None),
        ("key:MANAGE_PROJECT", None),
        ("key:VIEW_ANALYTICS", "FORBIDDEN"),
        ("developer", "FORBIDDEN"),
        ("stranger", "NOT_FOUND"),
        ("anonymous", "UNAUTHENTICATED"),
    ],
)
async def test_a_member_is_a_node_to_whoever_may_list_the_members(
    api: Api, caller: str, expected: str | None
) -> None:
    # given
    world = await build_world(api)
    member_id = world.ids["Member"]

    # when
    result = await api.gql(NODE, {"id": member_id}, token=world.callers[caller])

    # then
    if expected is None:
        assert result.ok() == {"node": {"__typename": "Member", "id": member_id}}
    else:
        assert (result.data, result.codes) == ({"node": None}, [expected])


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        ("owner", None),
        ("key:VIEW_ANALYTICS", None),
        ("developer", None),
        ("key:GENERATE_DOCUMENTS", "FORBIDDEN"),
        ("stranger", "NOT_FOUND"),
    ],
)
async def test_an_activity_event_is_a_node_to_whoever_reads_the_log(
    api: Api, caller: str, expected: str | None
) -> None:
    # given
    world = await build_world(api)
    event_id = world.ids["ActivityEvent"]

    # when
    result = await api.gql(NODE, {"id": event_id}, token=world.callers[caller])

    # then
    if expected is None:
        assert result.ok() == {"node": {"__typename": "ActivityEvent", "id": event_id}}
    else:
        assert (result.data, result.codes) == ({"node": None}, [expected])


async def test_a_user_is_a_node_as_viewer_user_only(api: Api) -> None:
    # given
    world = await build_world(api)
    user_id = world.ids["User"]

    # when
    own = await api.gql(NODE, {"id": user_id}, token=world.callers["owner"])
    a_keys_creator = await api.gql(NODE, {"id": user_id}, token=world.callers["key:VIEW_ANALYTICS"])
    someone_else = await api.gql(NODE, {"id": user_id}, token=world.callers["developer"])

    # then
    assert own.ok() == {"node": {"__typename": "User", "id": user_id}}
    assert a_keys_creator.ok() == own.ok()
    assert (someone_else.data, someone_else.codes) == ({"node": None}, ["NOT_FOUND"])


@pytest.mark.parametrize("node_id", ["zzz_" + "0" * 20, "not an id", "", "inv_" + "0" * 20])
async def test_an_id_of_no_type_that_can_be_fetched_is_not_found(api: Api, node_id: str) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await api.gql(NODE, {"id": node_id}, token=owner.token)

    # then: as `project(id: "not an id")` answers
    assert (result.data, result.codes) == ({"node": None}, ["NOT_FOUND"])


async def test_a_node_selects_its_types_fields_by_fragment(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])

    # when
    result = await api.gql(
        "query($id: ID!) { node(id: $id) { id ... on ApiKey { name scopes } } }",
        {"id": key_id},
        token=owner.token,
    )

    # then
    assert result.ok() == {"node": {"id": key_id, "name": "server", "scopes": ["VIEW_ANALYTICS"]}}


async def test_nodes_answers_each_id_in_order_and_nulls_only_the_refused_ones(api: Api) -> None:
    # given
    world = await build_world(api)
    ids = [world.ids["Environment"], new_id("key"), world.ids["ApiKey"], world.ids["Template"]]

    # when
    result = await api.gql(NODES, {"ids": ids}, token=world.callers["key:GENERATE_DOCUMENTS"])

    # then
    assert result.data == {
        "nodes": [
            {"__typename": "Environment", "id": ids[0]},
            None,
            None,
            {"__typename": "Template", "id": ids[3]},
        ]
    }
    assert [(e["path"], e["extensions"]["code"]) for e in result.errors] == [
        (["nodes", 1], "NOT_FOUND"),
        (["nodes", 2], "FORBIDDEN"),
    ]


async def test_nodes_without_credentials_refuses_each_id(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await api.gql(NODES, {"ids": [owner.project_id, owner.environment_id]})

    # then
    assert result.data == {"nodes": [None, None]}
    assert result.codes == ["UNAUTHENTICATED", "UNAUTHENTICATED"]


async def test_nodes_takes_at_most_100_ids(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    # when
    hundred = await api.gql(NODES, {"ids": [owner.project_id] * 100}, token=owner.token)
    more = await api.gql(NODES, {"ids": [owner.project_id] * 101}, token=owner.token)

    # then
    assert len(hundred.ok()["nodes"]) == 100
    assert more.data is None
    assert [e["extensions"] for e in more.errors] == [{"code": "BAD_USER_INPUT", "field": "ids"}]


async def test_nodes_costs_one_object_per_id(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    # when
    one = await api.gql(NODES, {"ids": [owner.project_id]}, token=owner.token)
    fifty = await api.gql(NODES, {"ids": [owner.project_id] * 50}, token=owner.token)
    literal = await api.gql(
        f'{{ nodes(ids: ["{owner.project_id}", "{owner.environment_id}"]) {{ id }} }}',
        token=owner.token,
    )

    # then
    assert one.body["extensions"]["cost"]["requested"] == 1
    assert fifty.body["extensions"]["cost"]["requested"] == 50
    assert literal.body["extensions"]["cost"]["requested"] == 2
