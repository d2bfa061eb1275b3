"""Documents: generateDocument, documents and document. Behaviour goes through the schema
(`schema`, rows from tests/factories.py); the unauthenticated matrix and one generation by a
key go over HTTP.

For every operation: success, no credentials, every single-scope key, another project's or
environment's objects (answered exactly like missing ones), and bad input. Then what a
document is: the published version rendered in its format, kept as it was when the template
moves on, made by a recorded user or key; a failed rendering is logged as DOCUMENT_FAILED.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from unittest.mock import ANY

import pytest

from keyplane.models import Document
from keyplane.models.activity import ActivityKind
from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, OAuthIssuer, Tenant, each_operation, new_tenant
from tests.schema_client import SchemaApi
from tests.template_helpers import (
    CLIENT_IP,
    DELETE_TEMPLATE,
    GENERATE_DOCUMENT,
    GET_DOCUMENT,
    LIST_DOCUMENTS,
    MISSING_DOCUMENT_ID,
    MISSING_ENVIRONMENT_ID,
    MISSING_TEMPLATE_ID,
    OAUTH_WORDS,
    PUBLISH_TEMPLATE,
    SINGLE_SCOPES,
    UNPUBLISH_TEMPLATE,
    UPDATE_TEMPLATE,
    bad_input,
    events,
    generate,
    new_template,
    published_template,
)

# --- one table of operations, for what every operation must do alike -----------------------


@dataclass(frozen=True)
class Target:
    environment_id: str
    template_id: str
    document_id: str


@dataclass(frozen=True)
class Operation:
    document: str
    field: str
    variables: Callable[[Target], dict[str, Any]]
    allowed: frozenset[str]


OPERATIONS = {
    "generateDocument": Operation(
        GENERATE_DOCUMENT,
        "generateDocument",
        lambda t: {"input": {"templateId": t.template_id, "data": {"name": "Ada"}}},
        frozenset({"GENERATE_DOCUMENTS"}),
    ),
    "documents": Operation(
        LIST_DOCUMENTS,
        "documents",
        lambda t: {"env": t.environment_id},
        frozenset({"GENERATE_DOCUMENTS", "VIEW_ANALYTICS"}),
    ),
    "document": Operation(
        GET_DOCUMENT,
        "document",
        lambda t: {"id": t.document_id},
        frozenset({"GENERATE_DOCUMENTS", "VIEW_ANALYTICS"}),
    ),
}
MISSING = Target(MISSING_ENVIRONMENT_ID, MISSING_TEMPLATE_ID, MISSING_DOCUMENT_ID)

every_operation = each_operation(OPERATIONS)


async def a_document(owner: Tenant, environment_id: str | None = None) -> Target:
    """A published template and one document made from it, in the owner's environment (or the
    one named)."""
    template = await published_template(owner, environment_id)
    made = await factories.document(template, created_by_id=owner.user_id)
    return Target(made.environment_id, template.id, made.id)  # type: ignore[attr-defined]


async def stored(environment_id: str) -> list[dict[str, Any]]:
    return await Document.filter(environment_id=environment_id).order_by("id").values()


@every_operation
async def test_every_document_operation_without_credentials_is_unauthenticated(
    api: Api, operation: Operation
) -> None:
    # given
    owner = await new_tenant(api)
    target = await a_document(owner)
    before = await stored(owner.environment_id)

    # when
    result = await api.gql(operation.document, operation.variables(target))

    # then
    assert result.status == 200
    assert result.data == {operation.field: None}
    assert result.codes == ["UNAUTHENTICATED"]
    assert await stored(owner.environment_id) == before


@every_operation
@pytest.mark.parametrize("scope", SINGLE_SCOPES)
async def test_every_document_operation_with_each_single_scope_key(
    schema: SchemaApi, operation: Operation, scope: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    target = await a_document(owner)
    _, secret = await factories.key_pair(owner.user_id, owner.environment_id, [scope])
    before = await stored(owner.environment_id)

    # when
    result = await schema.gql(operation.document, operation.variables(target), token=secret)

    # then
    if scope in operation.allowed:
        assert result.errors == []
        assert result.data[operation.field] is not None
    else:
        assert result.data == {operation.field: None}
        assert result.codes == ["FORBIDDEN"]
        assert await stored(owner.environment_id) == before


@every_operation
@pytest.mark.parametrize("scope", SINGLE_SCOPES)
async def test_every_document_operation_with_each_single_scope_oauth_token(
    schema: SchemaApi, oauth_issuer: OAuthIssuer, operation: Operation, scope: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    target = await a_document(owner)
    token = oauth_issuer.token(email=owner.email, scope=OAUTH_WORDS[scope])

    # when
    result = await schema.gql(operation.document, operation.variables(target), token=token)

    # then
    assert result.codes == ([] if scope in operation.allowed else ["FORBIDDEN"])


@every_operation
async def test_every_document_operation_on_another_projects_objects_answers_like_missing_ones(
    schema: SchemaApi, operation: Operation
) -> None:
    # given
    intruder = await factories.tenant(schema.app)
    victim = await factories.tenant(schema.app)
    target = await a_document(victim)
    before = await stored(victim.environment_id)

    # when
    elsewhere = await schema.gql(
        operation.document, operation.variables(target), token=intruder.token
    )
    missing = await schema.gql(
        operation.document, operation.variables(MISSING), token=intruder.token
    )

    # then
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere == missing
    assert await stored(victim.environment_id) == before


@every_operation
@pytest.mark.parametrize("credential", ["key with every scope", "admin of another environment"])
async def test_every_document_operation_on_another_environment_answers_like_missing_ones(
    schema: SchemaApi, operation: Operation, credential: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    other_environment_id = (await factories.environment(project_id=owner.project_id)).id
    target = await a_document(owner, other_environment_id)
    if credential.startswith("key"):
        _, caller = await factories.key_pair(owner.user_id, owner.environment_id, SINGLE_SCOPES)
    else:
        caller = await factories.member_token(
            schema.app, owner.project_id, Role.ADMIN, environment_ids=[owner.environment_id]
        )
    before = await stored(other_environment_id)

    # when
    elsewhere = await schema.gql(operation.document, operation.variables(target), token=caller)
    missing = await schema.gql(operation.document, operation.variables(MISSING), token=caller)

    # then
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere == missing
    assert await stored(other_environment_id) == before


@every_operation
@pytest.mark.parametrize("role", [Role.DEVELOPER, Role.VIEWER])
async def test_a_developer_generates_and_reads_documents_and_a_viewer_only_reads_them(
    schema: SchemaApi, operation: Operation, role: Role
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    target = await a_document(owner)
    member = await factories.member_token(schema.app, owner.project_id, role)
    allowed = role is Role.DEVELOPER or operation.field != "generateDocument"

    # when
    result = await schema.gql(operation.document, operation.variables(target), token=member)

    # then
    assert result.codes == ([] if allowed else ["FORBIDDEN"])


# --- generateDocument --------------------------------------------------------------------------


async def test_a_key_generates_a_document_that_records_the_key_and_its_creator(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    template_id = await new_template(
        api,
        owner.token,
        owner.environment_id,
        content="Total: {{ total }} {{ currency }}",
        publish=True,
    )
    key_id, secret = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])

    # when
    result = await generate(api, secret, template_id, {"total": 42.5, "currency": "EUR"})

    # then
    document = result.ok()["generateDocument"]
    assert document == {
        "id": ANY,
        "templateId": template_id,
        "templateVersion": 1,
        "format": "TEXT",
        "content": "Total: 42.5 EUR",
        "createdAt": ANY,
        "authKind": "API_KEY",
        "apiKeyId": key_id,
        "createdBy": {"id": owner.user_id},
    }
    assert document["id"].startswith("doc_")
    read = await api.gql(GET_DOCUMENT, {"id": document["id"]}, token=secret)
    assert read.ok()["document"] == document


@pytest.mark.parametrize(
    ("credential", "kind"), [("dashboard session", "JWT"), ("OAuth token", "OAUTH")]
)
async def test_a_user_generates_a_document_in_their_own_name(
    schema: SchemaApi, oauth_issuer: OAuthIssuer, credential: str, kind: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)
    token = owner.token
    if credential == "OAuth token":
        token = oauth_issuer.token(email=owner.email, scope="documents:generate")

    # when
    result = await generate(schema, token, template_id, {"name": "Ada"})

    # then
    document = result.ok()["generateDocument"]
    assert (document["authKind"], document["apiKeyId"]) == (kind, None)
    assert document["createdBy"] == {"id": owner.user_id}


@pytest.mark.parametrize(
    ("format", "content"),
    [
        ("HTML", "<p>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</p>"),
        ("MARKDOWN", "<p><script>alert(1)</script> & co</p>"),
        ("TEXT", "<p><script>alert(1)</script> & co</p>"),
    ],
)
async def test_html_escapes_what_it_prints_and_markdown_and_text_do_not(
    schema: SchemaApi, format: str, content: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema,
        owner.token,
        owner.environment_id,
        content="<p>{{ name }}</p>",
        format=format,
        publish=True,
    )

    # when
    result = await generate(
        schema, owner.token, template_id, {"name": "<script>alert(1)</script> & co"}
    )

    # then
    assert result.ok()["generateDocument"]["content"] == content
    assert result.ok()["generateDocument"]["format"] == format


async def test_documents_use_the_published_version_and_keep_it_when_the_template_moves_on(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema, owner.token, owner.environment_id, content="v1 {{ name }}", publish=True
    )
    (
        await schema.gql(
            UPDATE_TEMPLATE,
            {"input": {"id": template_id, "content": "v2 {{ name }}"}},
            token=owner.token,
        )
    ).ok()

    # when
    from_draft_time = (await generate(schema, owner.token, template_id, {"name": "a"})).ok()
    (await schema.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)).ok()
    after_publish = (await generate(schema, owner.token, template_id, {"name": "b"})).ok()
    (await schema.gql(DELETE_TEMPLATE, {"id": template_id}, token=owner.token)).ok()
    kept = await schema.gql(
        GET_DOCUMENT, {"id": from_draft_time["generateDocument"]["id"]}, token=owner.token
    )

    # then
    first = from_draft_time["generateDocument"]
    assert (first["templateVersion"], first["content"]) == (1, "v1 a")
    second = after_publish["generateDocument"]
    assert (second["templateVersion"], second["content"]) == (2, "v2 b")
    assert kept.ok()["document"] == first


async def test_a_template_never_published_or_unpublished_is_a_conflict(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    draft_id = await new_template(schema, owner.token, owner.environment_id, name="draft")
    unpublished_id = await new_template(
        schema, owner.token, owner.environment_id, name="was live", publish=True
    )
    (await schema.gql(UNPUBLISH_TEMPLATE, {"id": unpublished_id}, token=owner.token)).ok()

    # when
    draft = await generate(schema, owner.token, draft_id, {"name": "Ada"})
    unpublished = await generate(schema, owner.token, unpublished_id, {"name": "Ada"})

    # then
    for result in (draft, unpublished):
        assert result.data == {"generateDocument": None}
        assert result.codes == ["CONFLICT"]
    assert await stored(owner.environment_id) == []
    assert await events(ActivityKind.DOCUMENT_FAILED) == []


@pytest.mark.parametrize("data", [[1, 2], "text", 3, True])
async def test_data_that_is_not_a_json_object_is_bad_input(schema: SchemaApi, data: Any) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)

    # when
    result = await generate(schema, owner.token, template_id, data)

    # then
    assert bad_input(result) == (
        "data",
        "data must be a JSON object; its keys become the template's variables.",
    )
    assert await stored(owner.environment_id) == []


async def test_data_up_to_1_mib_of_json_is_accepted_and_beyond_is_refused(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema, owner.token, owner.environment_id, content="{{ blob|length }}", publish=True
    )
    overhead = len('{"blob":""}')
    fits = {"blob": "x" * (1024 * 1024 - overhead)}
    too_big = {"blob": "x" * (1024 * 1024 - overhead + 1)}

    # when
    accepted = await generate(schema, owner.token, template_id, fits)
    refused = await generate(schema, owner.token, template_id, too_big)

    # then
    assert accepted.ok()["generateDocument"]["content"] == str(1024 * 1024 - overhead)
    assert bad_input(refused) == (
        "data",
        "data is 1,048,577 bytes of JSON; the limit is 1,048,576 bytes.",
    )


async def test_a_missing_variable_is_bad_data_naming_it_and_is_logged_as_a_failure(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema,
        owner.token,
        owner.environment_id,
        content="Dear {{ name }},\nyou owe {{ invoice.total }}.",
        publish=True,
    )
    _, secret = await factories.key_pair(
        owner.user_id, owner.environment_id, ["GENERATE_DOCUMENTS"]
    )

    # when
    result = await generate(schema, secret, template_id, {"name": "Ada", "invoice": {}})

    # then
    assert bad_input(result) == (
        "data",
        "Undefined value on line 2: 'dict object' has no attribute 'total'. "
        "Check the names in data.",
    )
    assert await stored(owner.environment_id) == []
    [event] = await events(ActivityKind.DOCUMENT_FAILED)
    assert (event.project_id, event.environment_id) == (  # type: ignore[attr-defined]
        owner.project_id,
        owner.environment_id,
    )
    assert event.target == f"template:{template_id} v1 invoice: UNDEFINED"
    assert event.ip == CLIENT_IP
    assert event.actor.startswith("key:key_")


async def test_optional_variables_can_be_tested_with_is_defined(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema,
        owner.token,
        owner.environment_id,
        content="{% if note is defined %}{{ note }}{% else %}none{% endif %}",
        publish=True,
    )

    # when
    without = await generate(schema, owner.token, template_id, {})
    with_note = await generate(schema, owner.token, template_id, {"note": "hi"})

    # then
    assert without.ok()["generateDocument"]["content"] == "none"
    assert with_note.ok()["generateDocument"]["content"] == "hi"


async def test_an_error_raised_by_the_template_is_bad_data_naming_the_line(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema, owner.token, owner.environment_id, content="a\nb\n{{ total / count }}", publish=True
    )

    # when
    result = await generate(schema, owner.token, template_id, {"total": 1, "count": 0})

    # then
    assert bad_input(result) == (
        "data",
        "Rendering failed on line 3: ZeroDivisionError: division by zero",
    )
    assert len(await events(ActivityKind.DOCUMENT_FAILED)) == 1


async def test_data_cannot_smuggle_a_nul_character_into_a_document(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)

    # when
    result = await generate(schema, owner.token, template_id, {"name": "a\u0000b"})

    # then
    assert bad_input(result) == ("data", "The rendered document contains NUL characters.")
    assert await stored(owner.environment_id) == []


async def test_unicode_data_renders_as_it_is(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)

    # when
    result = await generate(schema, owner.token, template_id, {"name": "Zoë 🦊 “quoted”"})

    # then
    assert result.ok()["generateDocument"]["content"] == "Hello Zoë 🦊 “quoted”!"


# --- documents and document --------------------------------------------------------------------


async def test_documents_are_listed_newest_first_in_pages_within_their_environment(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    other_environment_id = (await factories.environment(project_id=owner.project_id)).id
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)
    elsewhere_id = await new_template(schema, owner.token, other_environment_id, publish=True)
    for name in ("a", "b", "c"):
        (await generate(schema, owner.token, template_id, {"name": name})).ok()
    (await generate(schema, owner.token, elsewhere_id, {"name": "x"})).ok()
    _, reader = await factories.key_pair(owner.user_id, owner.environment_id, ["VIEW_ANALYTICS"])

    # when
    first = (
        await schema.gql(LIST_DOCUMENTS, {"env": owner.environment_id, "first": 2}, token=reader)
    ).ok()["documents"]
    rest = (
        await schema.gql(
            LIST_DOCUMENTS,
            {"env": owner.environment_id, "first": 2, "after": first["pageInfo"]["endCursor"]},
            token=reader,
        )
    ).ok()["documents"]

    # then
    assert [e["node"]["content"] for e in first["edges"]] == ["Hello c!", "Hello b!"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["content"] for e in rest["edges"]] == ["Hello a!"]
    assert rest["pageInfo"]["hasNextPage"] is False


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"first": 0}, "first"), ({"first": 101}, "first"), ({"after": "nonsense!"}, "after")],
)
async def test_a_bad_document_page_request_is_bad_input(
    schema: SchemaApi, arguments: dict[str, Any], field: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await schema.gql(
        LIST_DOCUMENTS, {"env": owner.environment_id, **arguments}, token=owner.token
    )

    # then
    assert bad_input(result)[0] == field
