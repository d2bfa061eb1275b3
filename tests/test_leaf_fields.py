"""Plain leaf fields answered without graphql-core's per-field machinery (schema/leaf_fields.py)
answer exactly what graphql-core answers, errors included, and only those fields skip it."""

from __future__ import annotations

from collections.abc import Awaitable, Generator
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest
import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from keyplane.schema import leaf_fields
from keyplane.schema.executor import Executor


@strawberry.enum
class Color(Enum):
    RED = "RED"
    GREEN = "GREEN"


class _Later:
    """A value graphql-core awaits, anew on each run."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, str]:
        return _now(self.value).__await__()


async def _now(value: str) -> str:
    return value


@strawberry.type
class Owner:
    name: str
    email: str | Awaitable[str | None] | None = strawberry.field(graphql_type=str | None)
    code: str | Awaitable[str] = strawberry.field(graphql_type=str, default="c")


class Subclass(Owner):
    pass


def _owner(name: Any = "ada", email: Any = "ada@example.com", code: Any = "c") -> Owner:
    return Owner(name=name, email=email, code=code)


class _Refused:
    """An awaitable that raises, anew on each run (as schema/user.py's refused email)."""

    def __await__(self) -> Generator[Any, None, str]:
        raise ValueError("no email")
        yield  # a generator


@strawberry.type
class Item:
    id: strawberry.ID
    name: str
    count: int
    color: Color
    at: datetime
    maybe: str | None
    colors: list[Color]
    names: list[str] | None
    later: str | Awaitable[str] = strawberry.field(graphql_type=str)
    owner: Owner = strawberry.field(default_factory=_owner)
    other: Owner | None = None

    @strawberry.field
    def shout(self, loud: bool = False) -> str:
        return self.name.upper() if loud else self.name


def _item(**changes: Any) -> Item:
    values: dict[str, Any] = {
        "id": strawberry.ID("itm_1"),
        "name": "one",
        "count": 3,
        "color": Color.RED,
        "at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "maybe": None,
        "colors": [Color.GREEN, Color.RED],
        "names": ["a", "b"],
        "later": "soon",
    }
    return Item(**(values | changes))


ITEMS: list[Item] = []


@strawberry.type
class Query:
    @strawberry.field
    def items(self) -> list[Item | None]:
        return list(ITEMS)


FIELDS = """{ items { id name count color at maybe colors names later shout(loud: true)
  owner { name email code } other { name email code } } }"""
# Values graphql-core refuses or must handle itself: each is answered by graphql-core.
ODD = [
    _item(),
    _item(name=None),  # null in a non-null field
    _item(count=2**40),  # too large for Int: coercion fails
    _item(color="BLUE"),  # not a value of the enum
    _item(maybe=ValueError("refused")),  # an exception value is the field's error
    _item(later=_Later("then")),  # an awaitable is awaited
    _item(colors=[Color.RED, None]),  # a null item in a list of non-null items
    _item(colors=(Color.RED,)),  # a tuple: graphql-core takes any iterable
    _item(names=None),
    _item(maybe="set", colors=["GREEN"]),  # the enum's value rather than its member
    _item(owner=None),  # null in a non-null object field: the item is null
    _item(other=_owner(name=None)),  # a non-null sub-field fails: `other` is null
    _item(owner=_owner(name=None)),  # ... in a non-null object field: the item is null
    _item(other=_owner(email=_Refused())),  # an awaited sub-field fails: `email` is null
    _item(owner=_owner(email=_Refused()), other=_owner()),
    _item(other=Subclass(name="sub", email=None)),
    _item(other=ValueError("no owner")),
    _item(other=_owner(code=_Refused())),  # an awaited non-null sub-field fails: `other` is null
]


async def _run(executor: type[StrawberryGraphQLCoreExecutionContext], **kwargs: Any) -> Any:
    schema = strawberry.Schema(query=Query, execution_context_class=executor, **kwargs)
    result = await schema.execute(FIELDS)
    return result.data, [(error.message, error.path) for error in result.errors or []]


@pytest.fixture
def items() -> list[Item]:
    ITEMS[:] = ODD
    return ITEMS


async def test_every_value_is_answered_as_graphql_core_answers_it(items: list[Item]) -> None:
    ours = await _run(Executor)
    theirs = await _run(StrawberryGraphQLCoreExecutionContext)

    assert ours == theirs
    data, errors = ours
    assert data["items"][0] == {
        "id": "itm_1",
        "name": "one",
        "count": 3,
        "color": "RED",
        "at": "2026-01-02T03:04:05+00:00",
        "maybe": None,
        "colors": ["GREEN", "RED"],
        "names": ["a", "b"],
        "later": "soon",
        "shout": "ONE",
        "owner": {"name": "ada", "email": "ada@example.com", "code": "c"},
        "other": None,
    }
    assert data["items"][15]["other"] == {"name": "sub", "email": None, "code": "c"}
    assert data["items"][17]["other"] is None
    assert len(errors) == 12  # the odd values but the awaitable, tuple, null list, enum value


async def test_only_plain_leaf_fields_with_plain_values_skip_graphql_core(
    items: list[Item], monkeypatch: pytest.MonkeyPatch
) -> None:
    items[:] = [_item()]
    asked: list[str] = []
    execute_field = StrawberryGraphQLCoreExecutionContext.execute_field

    def counted(self: Any, parent_type: Any, source: Any, fields: Any, *rest: Any) -> Any:
        asked.append(fields[0].node.name.value)
        return execute_field(self, parent_type, source, fields, *rest)

    monkeypatch.setattr(StrawberryGraphQLCoreExecutionContext, "execute_field", counted)

    await _run(Executor)

    # `items` and `shout` have resolvers; `maybe` and `other` are null (answered here).
    assert asked == ["items", "shout", "other"]


async def test_a_resolve_hook_sends_every_field_through_graphql_core(
    items: list[Item], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Upper(SchemaExtension):
        def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
            value = _next(root, info, *args, **kwargs)
            return value.upper() if isinstance(value, str) else value

    items[:] = [_item()]
    answered = leaf_fields.answer
    calls: list[object] = []

    def counted(*args: Any) -> Any:
        calls.append(args)
        return answered(*args)

    monkeypatch.setattr(leaf_fields, "answer", counted)

    data, _ = await _run(Executor, extensions=[Upper])

    assert calls == []
    assert data["items"][0]["name"] == "ONE"
