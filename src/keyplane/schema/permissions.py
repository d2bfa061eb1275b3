"""Field permissions: pure checks of the principal, declared next to each root field.

They read `info.context.principal` only. Whether the principal reaches a given environment,
and holds a scope *there*, is decided by the resolver through `Access`, since that needs data.
Every root field's check, and its description's last sentence, come from its rule (`ruled`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from strawberry import Schema
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types.base import StrawberryObjectDefinition

from keyplane.access import check_credential
from keyplane.auth.principal import AuthKind, Principal
from keyplane.context import Info
from keyplane.errors import Forbidden, Unauthenticated
from keyplane.permissions import rules
from keyplane.permissions.checks import NO_RESTRICTIONS, CheckRequest
from keyplane.permissions.rules import Reach, Rule
from keyplane.permissions.scopes import Scope


def _principal(info: Info) -> Principal:
    return info.context.principal


OPEN_TO_ANYONE = "open to anyone"


def open_to_anyone() -> dict[str, str]:
    """The metadata of a root field anyone may call, anonymous callers included.

    Openness is declared, so that it is explicit, but not as a permission class answering
    True: Strawberry runs a field's permission extension on every call, and `viewer` is on
    most requests (17k instructions of 1.3M each, bench/instructions.py)."""
    return {"permission": OPEN_TO_ANYONE}


def is_open_to_anyone(metadata: Mapping[str, Any]) -> bool:
    return metadata.get("permission") == OPEN_TO_ANYONE


class IsAuthenticated(BasePermission):
    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        if not _principal(info).is_authenticated:
            raise Unauthenticated()
        return True


class IsUser(BasePermission):
    """A person: a dashboard session or an OAuth token, not an API key."""

    def __init__(self, *kinds: AuthKind) -> None:
        self.kinds = frozenset(kinds or (AuthKind.JWT, AuthKind.OAUTH))

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = _principal(info)
        if not principal.is_authenticated:
            raise Unauthenticated()
        if principal.kind not in self.kinds:
            raise Forbidden("This operation is for signed-in users.")
        return True


class HasAnyScope(BasePermission):
    """The credential carries at least one of these scopes (before role intersection)."""

    def __init__(self, *scopes: Scope) -> None:
        self.scopes = frozenset(scopes)

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = _principal(info)
        if not principal.is_authenticated:
            raise Unauthenticated()
        if not principal.token_scopes & self.scopes:
            names = " or ".join(sorted(self.scopes))
            raise Forbidden(f"This needs the {names} scope.", required_scopes=self.scopes)
        return True


REFUSAL = "refusal"


def may_refuse(reason: str) -> dict[str, str]:
    """The metadata of a field whose resolver may refuse the caller (FORBIDDEN, NOT_FOUND)
    though it declares no permission: `reason` says why.

    A refused field answers null with its error and nothing else is lost, so every guarded
    field (this marker, or a permission extension) is nullable; `guarded_fields` lists them
    and tests/test_partial_data.py fails on one that is not."""
    return {REFUSAL: reason}


def guarded_fields(schema: Schema) -> dict[tuple[str, str], str]:
    """Every field of the schema that can refuse its caller, as (type, field) -> why: those
    that carry a permission extension, and those marked `may_refuse`."""
    found: dict[tuple[str, str], str] = {}
    names = schema.config.name_converter
    for entry in schema.schema_converter.type_map.values():
        definition = entry.definition
        if not isinstance(definition, StrawberryObjectDefinition):
            continue
        for field in definition.fields:
            key = (definition.name, names.get_graphql_name(field))
            if REFUSAL in field.metadata:
                found[key] = field.metadata[REFUSAL]
            elif (
                RULE in field.metadata and rules.rule(field.metadata[RULE]).reach is not Reach.OPEN
            ):
                found[key] = rules.rule(field.metadata[RULE]).needs()
            elif any(
                isinstance(extension, PermissionExtension) and extension.permissions
                for extension in field.extensions
            ):
                found[key] = "declares a permission"
    return found


RULE = "rule"  # the metadata key naming a field's rule ("Query.apiKey")


class MeetsRule(BasePermission):
    """The credential side of a field's rule (permissions/rules.py): its kind and its own
    scopes. Reach, and the scopes held there, are the resolver's `Access.require`."""

    def __init__(self, rule: Rule) -> None:
        self.rule = rule

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        check_credential(self.rule, _principal(info))
        return True


def ruled(field: str, description: str) -> dict[str, Any]:
    """A field's description, metadata and (for a root field) permission extension, derived
    from its rule: `@strawberry.field(**ruled("Query.apiKey", "One API key."))`."""
    rule = rules.rule(field)
    text = f"{description} {rule.needs()}"
    metadata: dict[str, Any] = {RULE: rule.field}
    if rule.reach is Reach.OPEN:
        return {"description": text, "metadata": open_to_anyone() | metadata}
    # The checks (permissions/checks/) run after the rule: PASSES_CHECKS stays last. A nested
    # field's rule is its resolver's (`Access.require`); its checks run here all the same.
    root = field.partition(".")[0] in rules.ROOT_TYPES
    extension = PermissionExtension(
        permissions=[MeetsRule(rule), PASSES_CHECKS] if root else [PASSES_CHECKS],
        fail_silently=False,
        use_directives=False,
    )
    return {"description": text, "metadata": metadata, "extensions": [extension]}


def _target(kwargs: dict[str, Any]) -> str | None:
    """The environment a field names in its arguments (`environmentId`, or its input's)."""
    environment_id = kwargs.get("environment_id")
    if environment_id is None:
        environment_id = getattr(kwargs.get("input"), "environment_id", None)
    return None if environment_id is None else str(environment_id)


async def run_field_checks(info: Info, kwargs: dict[str, Any], *, field: str | None = None) -> None:
    """The checks of a guarded field (permissions/checks/), after its rule admitted it;
    `field` names the field asked about when it is not the one running (node's lookups)."""
    context = info.context
    checks = context.services.checks
    principal = context.principal
    key = principal.key
    environment_id = _target(kwargs)
    project_id = None
    if key is not None and (environment_id is None or environment_id == key.environment_id):
        environment_id, project_id = key.environment_id, key.project_id
    elif environment_id is not None:
        known = context.services.records.known_environment(environment_id)
        project_id = None if known is None else known.project_id
    operation = info.operation.name
    request = CheckRequest(
        principal=principal,
        operation=None if operation is None else operation.value,
        field=info.field_name if field is None else field,
        path=tuple(info.path.as_list()),
        environment_id=environment_id,
        project_id=project_id,
        client_ip=context.access.ip,
        headers=context.request.headers,
        restrictions=NO_RESTRICTIONS if key is None else key.restrictions,
        arguments=kwargs,
    )
    await checks.run(checks.field_checks, request)


class PassesChecks(BasePermission):
    """The hook of the field checks: the last permission of every guarded field.

    With no field check selected (the default: the built-in checks are about the request) it
    answers at once, synchronously; else it returns the checks' awaitable, which Strawberry
    awaits for an async resolver (every guarded field's is)."""

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool | Awaitable[bool]:
        if not info.context.services.checks.field_checks:
            return True
        return self._run(info, kwargs)

    @staticmethod
    async def _run(info: Info, kwargs: dict[str, Any]) -> bool:
        await run_field_checks(info, kwargs)
        return True


PASSES_CHECKS = PassesChecks()
