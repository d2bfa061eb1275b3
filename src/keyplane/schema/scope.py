"""GraphQL type of the scope catalog: the built-in scopes and those checks declare."""

from __future__ import annotations

import strawberry

from keyplane.permissions.checks import ScopeInfo as ScopeRecord


@strawberry.type(description="A scope a key may carry: built in, or declared by a check.")
class ScopeInfo:
    name: str = strawberry.field(
        description="The scope's name: a Scope value, or an extra scope (for `extraScopes`)."
    )
    description: str = strawberry.field(description="What it allows.")
    built_in: bool = strawberry.field(
        description="One of the four `Scope` values (else declared by a check)."
    )

    @classmethod
    def from_record(cls, record: ScopeRecord) -> ScopeInfo:
        return cls(name=record.name, description=record.description, built_in=record.built_in)
