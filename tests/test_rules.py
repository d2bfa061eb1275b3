"""The rules table is the one source of who may do what: every guarded field has exactly one
rule, and the schema's permission extensions and descriptions are derived from it."""

from __future__ import annotations

import re
from pathlib import Path

from strawberry.permission import PermissionExtension
from strawberry.types.base import StrawberryObjectDefinition

from keyplane.errors import Forbidden
from keyplane.permissions.rules import RULES, Reach, root_rule
from keyplane.permissions.scopes import Scope
from keyplane.schema.permissions import PASSES_CHECKS, RULE, MeetsRule, is_open_to_anyone
from keyplane.schema.root import schema

SOURCE = Path(__file__).resolve().parent.parent / "src" / "keyplane"


def _fields() -> dict[str, object]:
    """Every field of every object type of the built schema, as "Type.field"."""
    found: dict[str, object] = {}
    for type_name in schema.schema_converter.type_map:
        definition = schema.get_type_by_name(type_name)
        if not isinstance(definition, StrawberryObjectDefinition):
            continue
        for field in definition.fields:
            name = schema.config.name_converter.get_graphql_name(field)
            found[f"{definition.name}.{name}"] = field
    return found


FIELDS = _fields()


def _permission_extensions(field: object) -> list[PermissionExtension]:
    return [e for e in getattr(field, "extensions", []) if isinstance(e, PermissionExtension)]


def test_the_rule_keys_are_exactly_the_guarded_fields() -> None:
    guarded = {
        name
        for name, field in FIELDS.items()
        if _permission_extensions(field) or RULE in getattr(field, "metadata", {})
    }
    assert guarded == set(RULES)


def test_every_root_field_has_a_rule() -> None:
    roots = {name for name in FIELDS if name.startswith(("Query.", "Mutation."))}
    assert roots <= set(RULES)


def test_each_root_permission_is_the_credential_side_of_its_own_rule() -> None:
    for name, rule in RULES.items():
        field = FIELDS[name]
        extensions = _permission_extensions(field)
        metadata = getattr(field, "metadata", {})
        assert metadata[RULE] == name
        if rule.reach is Reach.OPEN:
            assert (extensions, is_open_to_anyone(metadata)) == ([], True), name
        elif name.startswith(("Query.", "Mutation.")):
            [extension] = extensions
            # the rule's credential side, then the checks (permissions/checks/), last
            [permission, checks] = extension.permissions
            assert isinstance(permission, MeetsRule), name
            assert permission.rule is rule, name
            assert checks is PASSES_CHECKS, name
        else:
            # nested: the resolver's Access.require decides; the checks run all the same
            [extension] = extensions
            assert extension.permissions == [PASSES_CHECKS], name


def test_each_description_ends_with_the_rule_s_needs_sentence() -> None:
    for name, rule in RULES.items():
        description = getattr(FIELDS[name], "description", "")
        assert description.endswith(rule.needs()), name


def test_every_rule_a_resolver_names_exists() -> None:
    named = {
        match
        for path in SOURCE.rglob("*.py")
        for match in re.findall(r'\brule\(\s*"([A-Za-z]+\.[A-Za-z]+)"', path.read_text())
    }
    assert named
    assert named <= set(RULES)


def test_the_needs_sentence_reads_from_the_rule() -> None:
    assert RULES["Query.apiKey"].needs() == (
        "Needs MANAGE_PROJECT or VIEW_ANALYTICS in the environment. A key may always read itself."
    )
    assert RULES["Mutation.logOut"].needs() == "Needs a dashboard session."
    assert RULES["Query.viewer"].needs() == "Open to anyone."


def test_root_rule_finds_operations_by_their_graphql_name() -> None:
    assert root_rule("createApiKey") is RULES["Mutation.createApiKey"]
    assert root_rule("apiKeys") is None  # a nested field, not an operation
    assert root_rule("launchRockets") is None


def test_the_scope_that_admits_is_the_first_the_rule_lists() -> None:
    rule = RULES["Query.documents"]
    assert rule.admitting(frozenset(Scope)) is Scope.GENERATE_DOCUMENTS
    assert rule.admitting(frozenset({Scope.VIEW_ANALYTICS})) is Scope.VIEW_ANALYTICS
    assert rule.admitting(frozenset({Scope.MANAGE_PROJECT})) is None


def test_a_forbidden_error_names_the_scopes_that_would_have_allowed_it() -> None:
    error = Forbidden("No.", required_scopes=[Scope.VIEW_ANALYTICS, Scope.MANAGE_PROJECT])
    assert error.extensions == {
        "code": "FORBIDDEN",
        "requiredScopes": ["MANAGE_PROJECT", "VIEW_ANALYTICS"],
    }
    assert Forbidden().extensions == {"code": "FORBIDDEN", "requiredScopes": []}
