"""Relay object identification: every object with an id is a `Node`.

The ids are the prefixed ones keyplane already issues (`prj_…`, `env_…`, `key_…`): Relay only
needs an id unique across types, which the prefix gives, so there are no second, base64 global
ids (Strawberry's `relay.Node`) to translate. `node(id)` reads the prefix and asks the typed
lookup of that type (schema/root.py), so it answers exactly what that lookup answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types.field import StrawberryField

from keyplane.context import Info
from keyplane.errors import BadUserInput, Forbidden, KeyplaneError, NotFound
from keyplane.schema.permissions import MeetsRule, PassesChecks, run_field_checks

MAX_NODE_IDS = 100


@strawberry.interface(
    description="An object that can be fetched again by its id with `node(id)` or `nodes(ids)`."
)
class Node:
    id: strawberry.ID = strawberry.field(
        description="Opaque id, unique across every type; its prefix names the type."
    )


def prefix_of(node_id: str) -> str:
    """`key_3hV0…` -> `key`; an id with no prefix gives ``."""
    prefix, separator, _ = node_id.partition("_")
    return prefix if separator else ""


@dataclass(frozen=True, slots=True)
class NodeLookup:
    """How one type is found by id: the permissions its typed lookup declares, run first as
    Strawberry runs them, then the lookup itself."""

    permissions: tuple[BasePermission, ...]
    find: Callable[[Info, str], Awaitable[object]]

    async def __call__(self, info: Info, node_id: str) -> object:
        field = None
        for permission in self.permissions:
            if isinstance(permission, MeetsRule):
                field = permission.rule.name
            if isinstance(permission, PassesChecks):
                # The checks are asked about the typed lookup (`apiKey`), as if it were called:
                # a check that refuses it refuses node(id) too.
                if info.context.services.checks.field_checks:
                    await run_field_checks(info, {"id": node_id}, field=field)
                continue
            if not permission.has_permission(None, info):
                raise Forbidden()
        return await self.find(info, node_id)


def permissions_of(field: StrawberryField) -> tuple[BasePermission, ...]:
    """The permissions a field's permission extension checks, in order."""
    return tuple(
        permission
        for extension in field.extensions
        if isinstance(extension, PermissionExtension)
        for permission in extension.permissions
    )


async def find_node(info: Info, node_id: str, lookups: Mapping[str, NodeLookup]) -> object:
    """The object `node_id` names, as its typed lookup answers it. An id of no known type is
    NOT_FOUND, as a typed lookup answers an id that names nothing (a malformed id included)."""
    info.context.access.require_authenticated()
    lookup = lookups.get(prefix_of(node_id))
    if lookup is None:
        raise NotFound()
    return await lookup(info, node_id)


async def find_nodes(
    info: Info, node_ids: list[str], lookups: Mapping[str, NodeLookup]
) -> list[object]:
    """Each id as `find_node` answers it, in order; a refused id is its error, which graphql
    reports at its index and answers null there, the others unharmed."""
    if len(node_ids) > MAX_NODE_IDS:
        raise BadUserInput(f"nodes takes at most {MAX_NODE_IDS} ids.", field="ids")
    found: list[object] = []
    for node_id in node_ids:
        try:
            found.append(await find_node(info, node_id, lookups))
        except KeyplaneError as error:
            found.append(error)
    return found
