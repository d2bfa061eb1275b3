"""graphql-core's executor, keeping each document's sub-field collection across requests.

graphql-core collects the sub-fields of an object field (which fields, in which order, merged
across fragments) once per execution, then forgets it: `{ viewer { kind apiKey { id } } }`
walks the same two selection sets on every request, about 4 % of what the whole request costs
(bench/instructions.py). The parsed document is the same object on every request (query_cache.py),
so what was collected for its nodes can be reused, as long as the answer cannot change:

- nothing in the document is a directive (no `@`): `@skip`/`@include` would make the answer
  depend on the variables, `@defer` on the delivery;
- no field comes through a fragment with its own variables.

Anything else is collected per request, as graphql-core does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from functools import partial
from typing import Any
from weakref import ref

from graphql import GraphQLObjectType, GraphQLResolveInfoHelpers, OperationDefinitionNode
from graphql.execution.collect_fields import CollectedFields, FieldDetailsList
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from keyplane.schema.leaf_fields import LeafFields

# Per operation, by id (graphql-core's nodes hash their whole subtree: a dict keyed by the node
# itself would cost more than the collection), weakly: the entry goes when the operation does,
# which is when query_cache.py's LRU lets its document go. Inside: (object type, id of each field
# node) -> (the field list, its collection); the value holds the field list, and so its nodes,
# so an id in a key cannot be reused while the entry lives.
Collections = dict[tuple[Any, ...], tuple[FieldDetailsList, CollectedFields]]
_collected: dict[int, tuple[ref[OperationDefinitionNode], Collections]] = {}


def _collections(operation: OperationDefinitionNode) -> Collections:
    key = id(operation)
    collections: Collections = {}
    _collected[key] = (ref(operation, lambda _: _collected.pop(key, None)), collections)
    return collections


def _alive(executor: ref[Executor]) -> Executor:
    running = executor()
    if running is None:
        raise RuntimeError("async_helpers called after its execution ended")
    return running


def _gather_async_work(executor: ref[Executor], values: Sequence[Awaitable[Any]]) -> Any:
    return _alive(executor).gather_async_work(values)


def _track_async_work(executor: ref[Executor], values: Sequence[Any]) -> None:
    _alive(executor).track_async_work(values)


def _reusable(field_details_list: FieldDetailsList) -> bool:
    for details in field_details_list:
        if details.defer_usage is not None or details.fragment_variable_values is not None:
            return False
        location = details.node.loc
        if location is None or "@" in location.source.body:
            return False
    return True


class Executor(LeafFields, StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with sub-field collections shared across executions (and plain
    leaf fields answered directly: schema/leaf_fields.py)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # graphql-core gives resolvers helpers (`info.async_helpers`) made of two methods bound
        # to this executor, and keeps them on it: a reference cycle, so every executor (and
        # the context, request and response it holds) outlived its request until the garbage
        # collector found it. The same methods, reached through a weak reference: only a
        # resolver of this execution calls them, while the execution holds the executor.
        executor = ref(self)
        self.async_helpers = GraphQLResolveInfoHelpers(
            gather=partial(_gather_async_work, executor),
            track=partial(_track_async_work, executor),
        )
        # This execution's own memo, by field list (as graphql-core's): the items of a list
        # share one field list, and looking it up costs less than building the shared key.
        self._this_execution: dict[tuple[Any, int], tuple[FieldDetailsList, CollectedFields]] = {}

    def collect_subfields(
        self, return_type: GraphQLObjectType, field_details_list: FieldDetailsList
    ) -> CollectedFields:
        memo_key = (return_type, id(field_details_list))
        memo = self._this_execution.get(memo_key)
        if memo is not None:
            return memo[1]
        operation = self.operation
        key = (return_type, *[id(details.node) for details in field_details_list])
        entry = _collected.get(id(operation))
        known = entry[1] if entry is not None and entry[0]() is operation else None
        found = None if known is None else known.get(key)
        if found is not None:
            collected = found[1]
        else:
            collected = super().collect_subfields(return_type, field_details_list)
            if _reusable(field_details_list):
                if known is None:
                    known = _collections(operation)
                known[key] = (field_details_list, collected)
        # Holding the field list keeps its id from being reused during this execution.
        self._this_execution[memo_key] = (field_details_list, collected)
        return collected
