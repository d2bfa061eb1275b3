"""The schema keeps its contract: declared permissions, ids, agreed names and descriptions."""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import BasePermission, PermissionExtension
from strawberry.types.base import StrawberryObjectDefinition

from keyplane.schema.permissions import IsAuthenticated, is_open_to_anyone, open_to_anyone
from keyplane.schema.root import schema

INTROSPECTION: dict[str, Any] = schema.introspect()["__schema"]
TYPES: dict[str, dict[str, Any]] = {
    t["name"]: t for t in INTROSPECTION["types"] if not t["name"].startswith("__")
}

QUERY_FIELDS = {"viewer", "projects", "project", "environment", "apiKey"}
MUTATION_FIELDS = {
    "signUp",
    "logIn",
    "logOut",
    "createProject",
    "createEnvironment",
    "createApiKey",
    "updateApiKey",
    "revokeApiKey",
    "deleteApiKey",
    "rotateApiKey",
}
INPUT_FIELDS = {
    "SignUpInput": {"email", "password", "name"},
    "LogInInput": {"email", "password"},
    "CreateProjectInput": {"name"},
    "CreateEnvironmentInput": {"projectId", "name"},
    "CreateApiKeyInput": {"environmentId", "name", "scopes", "expiresAt"},
    "UpdateApiKeyInput": {"id", "name", "scopes"},
    "RotateApiKeyInput": {"id", "expireOldInSeconds"},
}
ENUM_VALUES = {
    "Scope": {"GENERATE_DOCUMENTS", "MANAGE_TEMPLATES", "VIEW_ANALYTICS", "MANAGE_PROJECT"},
    "ApiKeyStatus": {"ACTIVE", "REVOKED", "EXPIRED"},
    "AuthKind": {"API_KEY", "OAUTH", "JWT", "ANONYMOUS"},
}
# Fields and arguments the issue spells out, as "Type.field(arguments)".
CONTRACT_FIELDS = {
    "Query": {"viewer()", "projects()", "project(id)", "environment(id)", "apiKey(id)"},
    "Mutation": {
        "signUp(input)",
        "logIn(input)",
        "logOut()",
        "createProject(input)",
        "createEnvironment(input)",
        "createApiKey(input)",
        "updateApiKey(input)",
        "revokeApiKey(id)",
        "deleteApiKey(id)",
        "rotateApiKey(input)",
    },
    "AuthPayload": {"accessToken()", "expiresAt()", "user()"},
    "User": {"id()", "email()", "name()"},
    "Viewer": {"kind()", "scopes()", "user()", "apiKey()", "environment()"},
    "Project": {"id()", "name()", "environments()"},
    "Environment": {"id()", "name()", "project()", "apiKeys(first, after, status)"},
    "ApiKeyConnection": {"edges()", "pageInfo()"},
    "ApiKeyEdge": {"node()", "cursor()"},
    "PageInfo": {"hasNextPage()", "endCursor()"},
    "ApiKey": {
        "id()",
        "name()",
        "prefix()",
        "scopes()",
        "status()",
        "createdAt()",
        "createdBy()",
        "expiresAt()",
        "revokedAt()",
        "lastUsedAt()",
        "totalRequests()",
    },
    "CreateApiKeyPayload": {"apiKey()", "secret()"},
    "RotateApiKeyPayload": {"apiKey()", "secret()"},
}


def unwrap(type_ref: dict[str, Any]) -> str:
    """The named type under any NON_NULL / LIST wrappers."""
    while type_ref["ofType"] is not None:
        type_ref = type_ref["ofType"]
    name: str = type_ref["name"]
    return name


def fields_of(type_: dict[str, Any]) -> list[dict[str, Any]]:
    return list(type_.get("fields") or []) + list(type_.get("inputFields") or [])


def values_and_arguments() -> list[tuple[str, dict[str, Any]]]:
    """Every field, input field and argument of the schema, with a readable location."""
    found: list[tuple[str, dict[str, Any]]] = []
    for type_name, type_ in TYPES.items():
        for field in fields_of(type_):
            found.append((f"{type_name}.{field['name']}", field))
            for argument in field.get("args") or []:
                found.append((f"{type_name}.{field['name']}({argument['name']})", argument))
    return found


def unguarded_root_fields(definition: StrawberryObjectDefinition) -> list[str]:
    """Fields that neither say they are open to anyone nor carry a PermissionExtension that
    lists at least one permission."""
    return [
        field.name
        for field in definition.fields
        if not is_open_to_anyone(field.metadata)
        and not any(
            isinstance(extension, PermissionExtension)
            and extension.permissions
            and all(isinstance(p, BasePermission) for p in extension.permissions)
            for extension in field.extensions
        )
    ]


def root_definition(name: str) -> StrawberryObjectDefinition:
    definition = schema.get_type_by_name(name)
    assert isinstance(definition, StrawberryObjectDefinition), name
    return definition


# Permissions


def test_every_root_field_declares_its_permission() -> None:
    for root in ("Query", "Mutation"):
        definition = root_definition(root)
        assert definition.fields, root
        assert unguarded_root_fields(definition) == [], root


def test_the_permission_check_notices_a_field_without_one() -> None:
    empty_list: list[Any] = [PermissionExtension(permissions=[])]
    authenticated: list[Any] = [PermissionExtension(permissions=[IsAuthenticated()])]

    # strawberry.field(...) with arguments is typed as returning Any (see pyproject's mypy notes).
    @strawberry.type
    class Probe:
        @strawberry.field
        def bare(self) -> int:
            return 0

        @strawberry.field(extensions=empty_list)  # type: ignore[untyped-decorator]
        def empty(self) -> int:
            return 0

        @strawberry.field(extensions=authenticated)  # type: ignore[untyped-decorator]
        def declared(self) -> int:
            return 0

        @strawberry.field(metadata=open_to_anyone())  # type: ignore[untyped-decorator]
        def open(self) -> int:
            return 0

        @strawberry.field(metadata={"permission": "anyone, surely"})  # type: ignore[untyped-decorator]
        def misspelt(self) -> int:
            return 0

    definition = Probe.__strawberry_definition__  # type: ignore[attr-defined]

    assert unguarded_root_fields(definition) == ["bare", "empty", "misspelt"]


# Names, ids and instants


def test_the_operations_of_the_contract_exist() -> None:
    assert {f["name"] for f in TYPES["Query"]["fields"]} >= QUERY_FIELDS
    assert {f["name"] for f in TYPES["Mutation"]["fields"]} >= MUTATION_FIELDS


def test_the_fields_and_arguments_of_the_contract_exist() -> None:
    missing = {}
    for type_name, wanted in CONTRACT_FIELDS.items():
        present = {
            f"{f['name']}({', '.join(a['name'] for a in f['args'])})"
            for f in TYPES[type_name]["fields"]
        }
        if wanted - present:
            missing[type_name] = wanted - present
    assert missing == {}


def test_input_types_carry_the_contract_names_and_fields() -> None:
    # Later issues may add input fields; the contract's own must stay.
    missing = {
        name: wanted - {f["name"] for f in TYPES.get(name, {}).get("inputFields") or []}
        for name, wanted in INPUT_FIELDS.items()
    }

    assert {name: fields for name, fields in missing.items() if fields} == {}
    assert {TYPES[name]["kind"] for name in INPUT_FIELDS} == {"INPUT_OBJECT"}


def test_every_input_argument_is_named_after_its_mutation() -> None:
    misnamed = {
        field["name"]: unwrap(argument["type"])
        for field in TYPES["Mutation"]["fields"]
        for argument in field["args"]
        if argument["name"] == "input"
        and unwrap(argument["type"]) != field["name"][0].upper() + field["name"][1:] + "Input"
    }

    assert misnamed == {}


def test_enums_have_exactly_the_contract_values() -> None:
    enums = {
        name: {value["name"] for value in TYPES[name]["enumValues"]}
        for name in ENUM_VALUES
        if TYPES.get(name, {}).get("kind") == "ENUM"
    }

    assert enums == ENUM_VALUES


def test_every_id_field_and_argument_is_an_opaque_id() -> None:
    ids = {
        where: unwrap(node["type"])
        for where, node in values_and_arguments()
        if node["name"] == "id" or node["name"].endswith(("Id", "Ids"))
    }

    assert "Mutation.revokeApiKey(id)" in ids
    assert "CreateEnvironmentInput.projectId" in ids
    assert "CreateApiKeyInput.environmentId" in ids
    assert {where: name for where, name in ids.items() if name != "ID"} == {}


def test_every_instant_is_a_datetime() -> None:
    instants = {
        where: unwrap(node["type"])
        for where, node in values_and_arguments()
        if node["name"].endswith("At")
    }

    assert "ApiKey.lastUsedAt" in instants
    assert {where: name for where, name in instants.items() if name != "DateTime"} == {}


# Descriptions


def test_every_type_has_a_description() -> None:
    assert [name for name, type_ in TYPES.items() if not type_["description"]] == []


def test_every_field_has_a_description() -> None:
    undocumented = [
        f"{type_name}.{field['name']}"
        for type_name, type_ in TYPES.items()
        for field in fields_of(type_)
        if not field["description"]
    ]

    assert undocumented == []
