"""What a GraphQL operation costs: a query 1, a mutation 1 per root field (aliases count)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    parse,
)

# Root fields that also cost one from the client's IP bucket, whoever calls them.
IP_CHARGED_FIELDS = frozenset({"signUp", "logIn"})


def _parse(query: str) -> DocumentNode | None:
    try:
        return parse(query)
    except GraphQLError:
        return None


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


def _root_fields(
    selection_set: SelectionSetNode,
    fragments: dict[str, FragmentDefinitionNode],
    seen: frozenset[str] = frozenset(),
) -> list[str]:
    names: list[str] = []
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            names.append(selection.name.value)
        elif isinstance(selection, InlineFragmentNode):
            names.extend(_root_fields(selection.selection_set, fragments, seen))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in fragments and name not in seen:
                names.extend(_root_fields(fragments[name].selection_set, fragments, seen | {name}))
    return names


@dataclass(frozen=True, slots=True)
class OperationCost:
    units: int  # charged to the caller's bucket
    ip_units: int  # signUp / logIn fields, charged to the client IP's bucket as well
    is_subscription: bool = False
    # Several operations and no operationName: the GraphQL spec says this is an error.
    ambiguous: bool = False


# Only short documents are cached, so a flood of huge distinct queries cannot fill memory.
CACHED_QUERY_MAX = 8192


def operation_cost(query: str | None, operation_name: str | None) -> OperationCost:
    """The cost of one operation; a document that does not parse costs 1 (it fails anyway)."""
    if query is not None and len(query) <= CACHED_QUERY_MAX:
        return _cached_cost(query, operation_name)
    return _cost(query, operation_name)


@lru_cache(maxsize=4096)
def _cached_cost(query: str, operation_name: str | None) -> OperationCost:
    return _cost(query, operation_name)


def _cost(query: str | None, operation_name: str | None) -> OperationCost:
    document = _parse(query) if query else None
    operation = _operation(document, operation_name) if document else None
    if document is not None and operation is None and operation_name is None:
        return OperationCost(units=1, ip_units=0, ambiguous=True)
    if document is None or operation is None:
        return OperationCost(units=1, ip_units=0)
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    fields = _root_fields(operation.selection_set, fragments)
    ip_units = sum(1 for name in fields if name in IP_CHARGED_FIELDS)
    if operation.operation is OperationType.MUTATION:
        return OperationCost(units=max(1, len(fields)), ip_units=ip_units)
    return OperationCost(
        units=1,
        ip_units=ip_units,
        is_subscription=operation.operation is OperationType.SUBSCRIPTION,
    )
