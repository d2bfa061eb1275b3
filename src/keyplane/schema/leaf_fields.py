"""Plain leaf fields answered without graphql-core's per-field machinery.

graphql-core runs every field the same way: it builds a resolve info (Strawberry's, a dozen
attributes), checks for arguments, calls the resolver (for a plain Strawberry field, two more
calls that end in `getattr`), asks whether the value is awaitable, then completes it through
`complete_value` (once more for a non-null type, once per item for a list) before coercing it.
A page of 20 keys has about 240 such fields, each a plain attribute of a scalar or enum type:
that machinery is most of what the page costs (bench/instructions.py).

The same holds of a plain field of an object type (a key's `environment` and `createdBy`,
an edge's `node`: 60 a page) whose value is an instance of that type's own class: its
sub-fields are run as graphql-core's `complete_object_value` would, without the resolve info,
the resolver calls and Strawberry's type check (an instance of the class passes it unless it
was `strawberry.cast`), errors guarded as graphql-core's `execute_field` guards them.

For a field whose answer is only its attribute, coerced (a Strawberry field with no resolver,
no extension and no arguments, of a scalar or enum type, or a list of one), `execute_field`
here reads the attribute and coerces it directly. Anything else takes graphql-core's path,
which then does all the work again from the start: a value that is null where null is not
allowed, an exception, an awaitable (a refused email, a counter read when asked), a value that
is not a list where one is expected, or any error while coercing. So every answer and every
error is graphql-core's own; only the fields that cannot fail are answered sooner.

The hook is graphql-core's `ExecutionContext.execute_field` (its signature is held by
tests/test_library_contracts.py) and the two methods it calls for an object field,
`collect_and_execute_subfields` and `handle_field_error`; Strawberry marks its plain-field
resolver `_is_default`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from types import GeneratorType
from typing import Any

from graphql import (
    GraphQLField,
    GraphQLLeafType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    Undefined,
    is_leaf_type,
)
from graphql.execution.collect_fields import FieldDetailsList
from graphql.pyutils import AwaitableOrValue, Path
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import CustomGraphQLEnumType, GraphQLCoreConverter
from strawberry.types.base import StrawberryObjectDefinition
from strawberry.types.cast import get_strawberry_type_cast
from strawberry.types.field import StrawberryField

# How a field is answered here: (attribute, coerce, nullable, a list of values); None: by
# graphql-core. By (parent type, field name): the schema is built once, at import.
Plan = tuple[str, Callable[[Any], Any], bool, bool]
_plans: dict[tuple[GraphQLObjectType, str], Plan | None] = {}
# A plain field of an object type: (attribute, its GraphQL type as declared, the object type,
# the class its values are made of).
ObjectPlan = tuple[str, GraphQLOutputType, GraphQLObjectType, type]
_object_plans: dict[tuple[GraphQLObjectType, str], ObjectPlan | None] = {}
# Per type of value: whether graphql-core would coerce it as it is (not null, not an error to
# raise, not something to await). Decided once per type.
_plain_types: dict[type, bool] = {}
_UNANSWERED = object()


def _attribute(field: GraphQLField | None) -> str | None:
    """The attribute a plain Strawberry field answers (no resolver, extension or argument)."""
    if field is None or field.args or not getattr(field.resolve, "_is_default", False):
        return None
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if (
        not isinstance(definition, StrawberryField)
        or not definition.is_basic_field
        or definition.default_resolver is not getattr
        or not isinstance(definition.python_name, str)
    ):
        return None
    return definition.python_name


def object_plan_of(field: GraphQLField | None) -> ObjectPlan | None:
    """How a plain field of an object type is answered here, or None."""
    attribute = _attribute(field)
    if field is None or attribute is None:
        return None
    kind = field.type
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    if not isinstance(kind, GraphQLObjectType):
        return None
    definition = kind.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if (
        not isinstance(definition, StrawberryObjectDefinition)
        or definition.is_graphql_generic
        or definition.concrete_of is not None  # a generic's specialization: graphql-core
        or definition.is_type_of is not None  # a type check of its own: graphql-core runs it
    ):
        return None
    return (attribute, field.type, kind, definition.origin)


def plan_of(field: GraphQLField | None) -> Plan | None:
    """How `field` can be answered here, or None when only graphql-core may answer it."""
    attribute = _attribute(field)
    if field is None or attribute is None:
        return None
    kind = field.type
    nullable = not isinstance(kind, GraphQLNonNull)
    if isinstance(kind, GraphQLNonNull):
        kind = kind.of_type
    listed = isinstance(kind, GraphQLList)
    if isinstance(kind, GraphQLList):
        kind = kind.of_type
        if not isinstance(kind, GraphQLNonNull):
            return None  # a null item is answered by graphql-core: keep to what cannot fail
        kind = kind.of_type
    if not is_leaf_type(kind):
        return None
    return (attribute, _coercion(kind), nullable, listed)


def _coercion(kind: GraphQLLeafType) -> Callable[[Any], Any]:
    """`kind.coerce_output_value`; for a Strawberry enum, a member's name looked up at once
    (Strawberry's walks every value of the enum, reading each member's `value` twice)."""
    if not isinstance(kind, CustomGraphQLEnumType):
        return kind.coerce_output_value
    enum: Any = kind.wrapped_cls
    names: dict[Enum, str] = {}
    for member in enum:
        for name, value in kind.values.items():
            if member.value == value.value:  # the first that matches, as Strawberry's loop
                names.setdefault(member, name)
                break
    general = kind.coerce_output_value

    def coerce(value: Any) -> Any:
        if type(value) is enum:
            name = names.get(value)
            if name is not None:
                return name
        return general(value)

    return coerce


def _plain(value: Any) -> bool:
    kind = type(value)
    known = _plain_types.get(kind)
    if known is None:
        known = _plain_types[kind] = not (
            value is None
            or issubclass(kind, (BaseException, GeneratorType, Awaitable))
            or hasattr(kind, "__await__")
        )
    return known


def answer(source: Any, plan: Plan) -> Any:
    """The field's completed value, or _UNANSWERED when graphql-core must answer it."""
    attribute, coerce, nullable, listed = plan
    try:
        value = getattr(source, attribute)
        if value is None:
            return None if nullable else _UNANSWERED
        if listed:
            if type(value) is not list:
                return _UNANSWERED
            completed = []
            for item in value:
                if not _plain(item):
                    return _UNANSWERED
                coerced = coerce(item)
                if coerced is None or coerced is Undefined:
                    return _UNANSWERED
                completed.append(coerced)
            return completed
        if not _plain(value):
            return _UNANSWERED
        coerced = coerce(value)
    except Exception:
        return _UNANSWERED  # graphql-core runs the field again and reports the error
    return _UNANSWERED if coerced is None or coerced is Undefined else coerced


class LeafFields(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, answering plain leaf fields directly (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A middleware (a schema extension's `resolve` hook) wraps every resolver: then every
        # field goes through graphql-core. Strawberry hands an empty manager when there is none.
        manager = self.middleware_manager
        self._answers_leaves = manager is None or not manager.middlewares

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> AwaitableOrValue[Any]:
        name = field_details_list[0].node.name.value
        key = (parent_type, name)
        try:
            plan = _plans[key]
        except KeyError:
            plan = _plans[key] = plan_of(self.schema.get_field(parent_type, name))
        if self._answers_leaves:
            if plan is not None:
                value = answer(source, plan)
                if value is not _UNANSWERED:
                    return value
            else:
                try:
                    object_plan = _object_plans[key]
                except KeyError:
                    field = self.schema.get_field(parent_type, name)
                    object_plan = _object_plans[key] = object_plan_of(field)
                if object_plan is not None:
                    value = self._object(
                        source, object_plan, field_details_list, path, position_context
                    )
                    if value is not _UNANSWERED:
                        return value
        return super().execute_field(
            parent_type, source, field_details_list, path, position_context
        )

    def _object(
        self,
        source: Any,
        plan: ObjectPlan,
        field_details_list: FieldDetailsList,
        path: Path,
        position_context: Any,
    ) -> Any:
        """A plain object field whose value is of its type's own class: its sub-fields, run
        and guarded as graphql-core's execute_field and complete_object_value do them (no
        resolve info is built: only a resolver or the type check would read it)."""
        attribute, return_type, object_type, origin = plan
        try:
            value = getattr(source, attribute)
        except Exception:
            return _UNANSWERED
        # Strawberry's type check passes an instance of the class itself, unless the value was
        # cast (strawberry.cast) to another type. Anything else (null, an error, an awaitable,
        # a subclass, a cast value) is graphql-core's to answer.
        if type(value) is not origin or get_strawberry_type_cast(value) is not None:
            return _UNANSWERED
        try:
            completed = self.collect_and_execute_subfields(
                object_type, field_details_list, path, value, position_context
            )
            if self.is_awaitable(completed):
                return self._awaited(completed, return_type, field_details_list, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
        return completed

    async def _awaited(
        self,
        completed: Awaitable[Any],
        return_type: GraphQLOutputType,
        field_details_list: FieldDetailsList,
        path: Path,
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, return_type, field_details_list, path)
            return None
