"""Queries parsed once, bounded while they are read, priced and costed before they run.

Cheap checks come before expensive ones (README, "Query limits"):

1. the text is lexed with a token limit (`parse(max_lexical_tokens=...)`), so a huge document is
   refused before any tree is built;
2. one walk over the tree, with each named fragment summarised once, gives what the rate
   limiter charges (a query 1, a mutation 1 per root field), the aliases, the depth, the
   largest number of selections sharing one response name, and the operation's static cost;
3. the caller is charged (http.py);
4. limits are checked (tokens, aliases, depth, repeated selections, cost with this request's
   variables), then the document is validated, stopping after a few errors, and the result of
   that validation is kept with the document;
5. the operation runs (schema/engine.py).

A parsed query is kept (LRU, keyed by its text) together with what was derived from it; texts
over 16k characters are not kept, so 128 bodies of 2 MiB cannot pin their syntax trees. Kept
errors are never changed: whoever needs another message or other extensions makes a new error.

The cost is counted in objects, GitHub-style: every object a field returns costs 1, a list
multiplies what it holds by its length, and nothing is divided. A connection's `edges` (and
its `nodes`) are as long as its `first`, and its `totalCount` is a number (free); `nodes(ids)`
is as long as its ids; a usage series (or an analytics range's `periods`) as long as its
number of points; any other list of objects is estimated at 10. Lengths are capped at what
the server serves (a page holds at most 100 items, a series 10,000 points), beyond which the
resolver refuses the argument with its own BAD_USER_INPUT. Each mutation root field weighs 10 more.
The shape is worked out once per document; only the arguments that come from variables are
read again on each request.
"""

from __future__ import annotations

import datetime as dt
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    EnumValueNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNamedType,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLSchema,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    is_composite_type,
    parse,
    specified_rules,
    validate,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

from keyplane.resolvers.analytics import MAX_RANGE
from keyplane.resolvers.usage import MAX_POINTS
from keyplane.resolvers.validate import PAGE_MAX
from keyplane.schema.node import MAX_NODE_IDS
from keyplane.settings import QueryLimits

# Root fields that also cost one from the client's IP bucket, whoever calls them.
IP_CHARGED_FIELDS = frozenset({"signUp", "logIn"})

# Bounded in count, as Strawberry's caches are, and in size (see the module docstring).
MAXSIZE = 128
MAX_KEPT_QUERY_CHARS = 16 * 1024

MUTATION_WEIGHT = 10
UNBOUNDED_LIST_ESTIMATE = 10
# A response name selected more often than this in one selection set is refused: graphql-core
# compares every pair of such selections when it validates (1,000 copies of `viewer { kind }`
# take over a second), and no real client repeats a field that often.
MAX_REPEATED_SELECTIONS = 30

ANALYTICS_MAX_DAYS = MAX_RANGE.days
STEP_SECONDS = {"MINUTE": 60, "HOUR": 3600, "DAY": 86400}
INTROSPECTION_ROOTS = frozenset({"__schema", "__type"})

Variables = Mapping[str, Any]
# A number that may depend on the request's variables: an int when it does not.
Amount = int | Callable[[Variables], int]


def _evaluate(amount: Amount, variables: Variables) -> int:
    return amount if isinstance(amount, int) else amount(variables)


def _sum(amounts: Iterable[Amount]) -> Amount:
    constant = 0
    variable: list[Callable[[Variables], int]] = []
    for amount in amounts:
        if isinstance(amount, int):
            constant += amount
        else:
            variable.append(amount)
    if not variable:
        return constant
    parts = tuple(variable)
    return lambda v: constant + sum(part(v) for part in parts)


def _times(size: Amount, inner: Amount) -> Amount:
    """`size` objects, each costing 1 plus what it holds."""
    if isinstance(size, int) and isinstance(inner, int):
        return size * (1 + inner)
    return lambda v: _evaluate(size, v) * (1 + _evaluate(inner, v))


def _argument(field: FieldNode, name: str) -> ValueNode | None:
    for argument in field.arguments or ():
        if argument.name.value == name:
            return argument.value
    return None


def _int_of(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _page_size(field: FieldNode, default: object) -> Amount:
    """A connection's length: its `first`, capped at the largest page served."""
    node = _argument(field, "first")
    fallback = _int_of(default) or 0

    def bounded(value: int | None) -> int:
        # A size the resolver refuses (BAD_USER_INPUT) fetches nothing.
        size = value if value is not None else fallback
        return size if 0 < size <= PAGE_MAX else 0

    if isinstance(node, VariableNode):
        name = node.name.value
        return lambda v: bounded(_int_of(v.get(name)))
    if isinstance(node, IntValueNode):
        try:
            return bounded(int(node.value))
        except ValueError:  # over 4,300 digits: validation refuses it anyway
            return 0
    return bounded(None)


def _ids_length(field: FieldNode) -> Amount:
    """How many objects `nodes(ids: ...)` returns: one per id, capped at what it serves."""
    node = _argument(field, "ids")

    def bounded(ids: object) -> int:
        # More ids than served is BAD_USER_INPUT: nothing is fetched.
        size = len(ids) if isinstance(ids, list) else 1
        return size if size <= MAX_NODE_IDS else 0

    if isinstance(node, VariableNode):
        name = node.name.value
        return lambda v: bounded(v.get(name))
    if isinstance(node, ListValueNode):
        return bounded(list(node.values))
    return 1  # a single id is a list of one


def _literal(node: ValueNode | None) -> Callable[[Variables], object]:
    if isinstance(node, VariableNode):
        name = node.name.value
        return lambda v: v.get(name)
    if isinstance(node, StringValueNode | EnumValueNode):
        value: object = node.value
        return lambda v: value
    return lambda v: None


def _instant(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def _points(field: FieldNode, default_granularity: object, *, max_days: int | None) -> Amount:
    """How many periods `from`..`to` holds at its granularity. A range the resolver refuses
    (over MAX_POINTS periods, or over `max_days`) costs 1: it is answered BAD_USER_INPUT before
    any work is done."""
    start, end = _literal(_argument(field, "from")), _literal(_argument(field, "to"))
    granularity = _literal(_argument(field, "granularity"))

    def points(v: Variables) -> int:
        first, last = _instant(start(v)), _instant(end(v))
        step = STEP_SECONDS.get(str(granularity(v) or default_granularity), 60)
        if first is None or last is None or last <= first:
            return 1
        try:
            span = (last - first).total_seconds()
        except OverflowError:
            return 1
        # As the resolvers count: the periods the range starts and ends in, and all between.
        count = int(last.timestamp() // step) - int(first.timestamp() // step) + 1
        if count > MAX_POINTS or (max_days is not None and span > max_days * 86400):
            return 1
        return count

    arguments = (_argument(field, name) for name in ("from", "to", "granularity"))
    if any(isinstance(argument, VariableNode) for argument in arguments):
        return points
    return points({})


@dataclass(frozen=True, slots=True)
class Shape:
    """What one selection set asks for (fragments folded in)."""

    cost: Amount = 0
    aliases: int = 0
    depth: int = 0
    repeated: int = 0  # the most selections sharing one response name in one selection set
    introspects: bool = False
    # How often each response name is selected at this level, fragments included (a fragment
    # spread into a selection set adds its names to that set's).
    names: Mapping[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class Operation:
    """One operation of a parsed query, with what the limits and the rate limiter need."""

    node: OperationDefinitionNode
    units: int  # charged to the caller's bucket
    ip_units: int  # signUp / logIn fields, charged to the client IP's bucket as well
    shape: Shape
    # Set by the engine once the operation passed every check with a cost that no variable
    # changes and no introspection: later requests sending it skip the checks, and share its
    # answers' `extensions` (made once: every new dict of a request is work for the collector).
    cleared: bool = False
    extensions: dict[str, Any] | None = None

    def clear(self, extensions: dict[str, Any]) -> None:
        self.cleared = True
        self.extensions = extensions

    @property
    def is_subscription(self) -> bool:
        return self.node.operation is OperationType.SUBSCRIPTION

    @property
    def settled(self) -> bool:
        """Whether its checks give the same answer for every request (no variable moves its
        cost, no caller's kind matters)."""
        return isinstance(self.shape.cost, int) and not self.shape.introspects

    def cost(self, variables: Variables | None) -> int:
        return _evaluate(self.shape.cost, variables or {})


# Several operations and no operationName: the GraphQL spec says this is an error.
AMBIGUOUS = "ambiguous"


class ParsedQuery:
    """A query text as parsed once: its document (or why it has none) and what was derived."""

    __slots__ = ("_operations", "_schema", "_validation", "document", "error")

    def __init__(
        self, schema: GraphQLSchema, document: DocumentNode | None, error: GraphQLError | None
    ) -> None:
        self._schema = schema
        self.document = document
        self.error = error  # a syntax error, or too many tokens (then `error.extensions`)
        self._operations: dict[str | None, Operation | str | None] = {}
        self._validation: dict[bool, tuple[GraphQLError, ...]] = {}

    def operation(self, name: str | None) -> Operation | str | None:
        """The named (or only) operation, AMBIGUOUS, or None when there is no such operation."""
        if name in self._operations:
            return self._operations[name]
        found: Operation | str | None = None
        if self.document is not None:
            operations = [
                d for d in self.document.definitions if isinstance(d, OperationDefinitionNode)
            ]
            if name is None:
                if len(operations) == 1:
                    found = self._analyse(operations[0])
                elif operations:
                    found = AMBIGUOUS
            else:
                node = next((o for o in operations if o.name and o.name.value == name), None)
                found = None if node is None else self._analyse(node)
        self._operations[name] = found
        return found

    def validation_errors(
        self, limits: QueryLimits, *, hide_suggestions: bool
    ) -> tuple[GraphQLError, ...]:
        """graphql-core's validation, stopping after a few errors; kept per suggestion mode."""
        if hide_suggestions not in self._validation:
            assert self.document is not None
            self._validation[hide_suggestions] = tuple(
                validate(
                    self._schema,
                    self.document,
                    specified_rules,
                    max_errors=limits.max_validation_errors,
                    hide_suggestions=hide_suggestions,
                )
            )
        return self._validation[hide_suggestions]

    def _analyse(self, node: OperationDefinitionNode) -> Operation:
        assert self.document is not None
        fragments = {
            d.name.value: d
            for d in self.document.definitions
            if isinstance(d, FragmentDefinitionNode)
        }
        root = {
            OperationType.QUERY: self._schema.query_type,
            OperationType.MUTATION: self._schema.mutation_type,
            OperationType.SUBSCRIPTION: self._schema.subscription_type,
        }[node.operation]
        walker = _Walker(self._schema, fragments)
        names = walker.root_names(node.selection_set)
        shape = walker.shape(
            node.selection_set, root, mutation=node.operation is OperationType.MUTATION
        )
        ip_units = sum(1 for name in names if name in IP_CHARGED_FIELDS)
        units = max(1, len(names)) if node.operation is OperationType.MUTATION else 1
        return Operation(node=node, units=units, ip_units=ip_units, shape=shape)


class _Walker:
    """One pass over an operation's selections; each fragment is summarised once per place it
    can be spread into (the same fragment spread twice is not walked twice)."""

    def __init__(self, schema: GraphQLSchema, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self._schema = schema
        self._fragments = fragments
        self._memo: dict[tuple[str, int, int], Shape] = {}
        self._walking: set[str] = set()

    def root_names(
        self, selection_set: SelectionSetNode, seen: frozenset[str] = frozenset()
    ) -> list[str]:
        names: list[str] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                names.append(selection.name.value)
            elif isinstance(selection, InlineFragmentNode):
                names.extend(self.root_names(selection.selection_set, seen))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in self._fragments and name not in seen:
                    names.extend(
                        self.root_names(self._fragments[name].selection_set, seen | {name})
                    )
        return names

    def shape(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType | None,
        *,
        page: Amount | None = None,
        points: Amount | None = None,
        mutation: bool = False,
    ) -> Shape:
        costs: list[Amount] = []
        depth = 0
        aliases = repeated = 0
        introspects = False
        names: dict[str, int] = {}
        parts: list[Shape] = []
        fragments: list[Shape] = []
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                response = (selection.alias or selection.name).value
                names[response] = names.get(response, 0) + 1
                aliases += selection.alias is not None
                parts.append(self._field(selection, parent, page=page, points=points))
                if mutation:
                    costs.append(MUTATION_WEIGHT)
            elif isinstance(selection, InlineFragmentNode):
                condition = (
                    self._schema.get_type(selection.type_condition.name.value)
                    if selection.type_condition
                    else parent
                )
                fragments.append(
                    self.shape(
                        selection.selection_set,
                        condition,
                        page=page,
                        points=points,
                        mutation=mutation,
                    )
                )
            elif isinstance(selection, FragmentSpreadNode):
                fragments.append(self._spread(selection.name.value, page=page, points=points))
        for fragment in fragments:
            for response, count in fragment.names.items():
                names[response] = names.get(response, 0) + count
        parts.extend(fragments)
        for part in parts:
            costs.append(part.cost)
            depth = max(depth, part.depth)
            aliases += part.aliases
            repeated = max(repeated, part.repeated)
            introspects = introspects or part.introspects
        repeated = max(repeated, *names.values(), 0)
        return Shape(
            cost=_sum(costs),
            aliases=aliases,
            depth=depth,
            repeated=repeated,
            introspects=introspects,
            names=names,
        )

    def _spread(self, name: str, *, page: Amount | None, points: Amount | None) -> Shape:
        fragment = self._fragments.get(name)
        if fragment is None or name in self._walking:
            return Shape()  # unknown or cyclic: validation reports it
        key = (name, id(page), id(points))
        if key not in self._memo:
            self._walking.add(name)
            try:
                self._memo[key] = self.shape(
                    fragment.selection_set,
                    self._schema.get_type(fragment.type_condition.name.value),
                    page=page,
                    points=points,
                )
            finally:
                self._walking.discard(name)
        return self._memo[key]

    def _field(
        self,
        field: FieldNode,
        parent: GraphQLNamedType | None,
        *,
        page: Amount | None,
        points: Amount | None,
    ) -> Shape:
        name = field.name.value
        introspects = name in INTROSPECTION_ROOTS
        if field.selection_set is None:
            return Shape(introspects=introspects)
        definition = None
        if name == "__schema":
            definition = SchemaMetaFieldDef
        elif name == "__type":
            definition = TypeMetaFieldDef
        else:
            definition = getattr(parent, "fields", {}).get(name)
        output: GraphQLOutputType | None = None if definition is None else definition.type
        is_list = False
        while isinstance(output, GraphQLNonNull | GraphQLList):
            is_list = is_list or isinstance(output, GraphQLList)
            output = output.of_type
        named = output if output is not None and is_composite_type(output) else None

        # What the field's own arguments say about the lists below it.
        inner_page = page
        inner_points = points
        arguments = {} if definition is None else definition.args
        if "first" in arguments:
            inner_page = _page_size(field, arguments["first"].default_value)
        if "from" in arguments and "to" in arguments:
            granularity = arguments.get("granularity")
            default = None if granularity is None else granularity.default_value
            inner_points = _points(
                field,
                getattr(default, "value", default) or "HOUR",
                max_days=ANALYTICS_MAX_DAYS if name == "analytics" else None,
            )

        size: Amount = 1
        if is_list:
            if "from" in arguments and "to" in arguments and inner_points is not None:
                size = inner_points
            elif name == "periods" and points is not None:
                size = points
            elif name in ("edges", "nodes") and page is not None:
                size = page
            elif "ids" in arguments:
                size = _ids_length(field)
            else:
                size = UNBOUNDED_LIST_ESTIMATE
        below = self.shape(
            field.selection_set,
            named,
            page=inner_page if "first" in arguments else None,
            points=inner_points,
        )
        ignored_depth = name.startswith("__")  # introspection is bounded by cost, as Strawberry
        return Shape(
            cost=_times(size, below.cost),
            aliases=below.aliases,
            depth=0 if ignored_depth else 1 + below.depth,
            repeated=below.repeated,
            introspects=introspects or below.introspects,
        )


class QueryCache:
    """Parsed queries of one schema, the most recent kept."""

    def __init__(self, schema: GraphQLSchema, limits: QueryLimits) -> None:
        self.schema = schema
        self.limits = limits
        self._kept: OrderedDict[str, ParsedQuery] = OrderedDict()

    def clear(self) -> None:
        self._kept.clear()

    def parsed(self, query: str) -> ParsedQuery:
        kept = self._kept.get(query)
        if kept is not None:
            self._kept.move_to_end(query)
            return kept
        parsed = self._parse(query)
        if len(query) <= MAX_KEPT_QUERY_CHARS:
            self._kept[query] = parsed
            if len(self._kept) > MAXSIZE:
                self._kept.popitem(last=False)
        return parsed

    def _parse(self, query: str) -> ParsedQuery:
        try:
            document = parse(query, max_lexical_tokens=self.limits.max_tokens)
        except GraphQLSyntaxError as error:
            if "tokens" in error.message and "Parsing aborted" in error.message:
                return ParsedQuery(
                    self.schema,
                    None,
                    GraphQLError(
                        f"The document holds more than {self.limits.max_tokens} tokens, the "
                        "most one operation may hold.",
                        extensions={"code": "QUERY_TOO_COMPLEX"},
                    ),
                )
            return ParsedQuery(self.schema, None, error)
        except RecursionError:
            return ParsedQuery(
                self.schema,
                None,
                GraphQLError("The document nests too deeply to be read."),
            )
        return ParsedQuery(self.schema, document, None)
