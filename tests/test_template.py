"""Templates: create, update, delete, publish, unpublish, list, read. Behaviour goes through the
schema (`schema`, rows from tests/factories.py); the unauthenticated matrix and one create go
over HTTP.

For every operation: success, no credentials, every single-scope key, another project's or
environment's template (answered exactly like a missing one), and bad input. Then versions:
publishing freezes numbered versions, the draft moves on without touching them, and each
publish is in the activity log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from unittest.mock import ANY

import pytest
from starlette.applications import Starlette

from keyplane.models import Template, TemplateVersion
from keyplane.models.activity import ActivityKind
from keyplane.permissions.scopes import Role
from tests import factories
from tests.helpers import Api, OAuthIssuer, Operation, Tenant, each_operation, new_tenant
from tests.schema_client import SchemaApi, execute
from tests.template_helpers import (
    CLIENT_IP,
    CREATE_TEMPLATE,
    DELETE_TEMPLATE,
    GET_TEMPLATE,
    LIST_TEMPLATES,
    MISSING_ENVIRONMENT_ID,
    MISSING_TEMPLATE_ID,
    OAUTH_WORDS,
    PUBLISH_TEMPLATE,
    SINGLE_SCOPES,
    UNPUBLISH_TEMPLATE,
    UPDATE_TEMPLATE,
    bad_input,
    create_template,
    events,
    new_template,
    published_template,
    read_template,
)

# --- one table of operations, for what every operation must do alike -----------------------


# Each operation's variables: (environment id, template id) -> variables.
OPERATIONS = {
    "createTemplate": Operation(
        CREATE_TEMPLATE,
        "createTemplate",
        lambda env, _: {
            "input": {"environmentId": env, "name": "new", "content": "x", "format": "TEXT"}
        },
    ),
    "updateTemplate": Operation(
        UPDATE_TEMPLATE,
        "updateTemplate",
        lambda _, tpl: {"input": {"id": tpl, "name": "renamed", "content": "changed"}},
    ),
    "deleteTemplate": Operation(DELETE_TEMPLATE, "deleteTemplate", lambda _, tpl: {"id": tpl}),
    "publishTemplate": Operation(PUBLISH_TEMPLATE, "publishTemplate", lambda _, tpl: {"id": tpl}),
    "unpublishTemplate": Operation(
        UNPUBLISH_TEMPLATE, "unpublishTemplate", lambda _, tpl: {"id": tpl}
    ),
    "templates": Operation(LIST_TEMPLATES, "templates", lambda env, _: {"env": env}),
    "template": Operation(GET_TEMPLATE, "template", lambda _, tpl: {"id": tpl}),
}
READING = ["templates", "template"]
READ_SCOPES = {"MANAGE_TEMPLATES", "GENERATE_DOCUMENTS"}
WRITE_SCOPES = {"MANAGE_TEMPLATES"}

every_operation = each_operation(OPERATIONS)


async def stored(environment_id: str) -> list[dict[str, Any]]:
    """What a mutation could change: the environment's templates and versions, as stored."""
    templates = await Template.filter(environment_id=environment_id).order_by("id").values()
    versions = (
        await TemplateVersion.filter(template__environment_id=environment_id)
        .order_by("id")
        .values()
    )
    return [*templates, *versions]


async def a_published_template(owner: Tenant, environment_id: str | None = None) -> str:
    """A template with version 1 published and an edited draft (so that every operation has
    something to do), in the owner's first environment unless told."""
    return (await published_template(owner, environment_id, draft="Hi {{ name }}")).id


@every_operation
async def test_every_template_operation_without_credentials_is_unauthenticated(
    api: Api, operation: Operation
) -> None:
    # given
    owner = await new_tenant(api)
    template_id = await a_published_template(owner)
    before = await stored(owner.environment_id)

    # when
    result = await api.gql(
        operation.document, operation.variables(owner.environment_id, template_id)
    )

    # then
    assert result.status == 200
    assert result.data == {operation.field: None}
    assert result.codes == ["UNAUTHENTICATED"]
    assert await stored(owner.environment_id) == before


@every_operation
@pytest.mark.parametrize("scope", SINGLE_SCOPES)
async def test_every_template_operation_with_each_single_scope_key(
    schema: SchemaApi, operation: Operation, scope: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await a_published_template(owner)
    _, secret = await factories.key_pair(owner.user_id, owner.environment_id, [scope])
    before = await stored(owner.environment_id)
    allowed = READ_SCOPES if operation.field in READING else WRITE_SCOPES

    # when
    result = await schema.gql(
        operation.document, operation.variables(owner.environment_id, template_id), token=secret
    )

    # then
    if scope in allowed:
        assert result.errors == []
        assert result.data[operation.field] is not None
    else:
        assert result.data == {operation.field: None}
        assert result.codes == ["FORBIDDEN"]
        assert await stored(owner.environment_id) == before


@every_operation
@pytest.mark.parametrize("scope", SINGLE_SCOPES)
async def test_every_template_operation_with_each_single_scope_oauth_token(
    schema: SchemaApi, oauth_issuer: OAuthIssuer, operation: Operation, scope: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await a_published_template(owner)
    token = oauth_issuer.token(email=owner.email, scope=OAUTH_WORDS[scope])
    allowed = READ_SCOPES if operation.field in READING else WRITE_SCOPES

    # when
    result = await schema.gql(
        operation.document, operation.variables(owner.environment_id, template_id), token=token
    )

    # then
    assert result.codes == ([] if scope in allowed else ["FORBIDDEN"])


@every_operation
async def test_every_template_operation_on_another_projects_template_answers_like_a_missing_id(
    schema: SchemaApi, operation: Operation
) -> None:
    # given
    intruder = await factories.tenant(schema.app)
    victim = await factories.tenant(schema.app)
    template_id = await a_published_template(victim)
    before = await stored(victim.environment_id)

    # when
    elsewhere = await schema.gql(
        operation.document,
        operation.variables(victim.environment_id, template_id),
        token=intruder.token,
    )
    missing = await schema.gql(
        operation.document,
        operation.variables(MISSING_ENVIRONMENT_ID, MISSING_TEMPLATE_ID),
        token=intruder.token,
    )

    # then
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere == missing
    assert await stored(victim.environment_id) == before


@every_operation
@pytest.mark.parametrize("credential", ["key with every scope", "admin of another environment"])
async def test_every_template_operation_on_another_environment_answers_like_a_missing_id(
    schema: SchemaApi, operation: Operation, credential: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    other_environment_id = (await factories.environment(project_id=owner.project_id)).id
    template_id = await a_published_template(owner, other_environment_id)
    if credential.startswith("key"):
        _, caller = await factories.key_pair(owner.user_id, owner.environment_id, SINGLE_SCOPES)
    else:
        caller = await factories.member_token(
            schema.app, owner.project_id, Role.ADMIN, environment_ids=[owner.environment_id]
        )
    before = await stored(other_environment_id)

    # when
    elsewhere = await schema.gql(
        operation.document, operation.variables(other_environment_id, template_id), token=caller
    )
    missing = await schema.gql(
        operation.document,
        operation.variables(MISSING_ENVIRONMENT_ID, MISSING_TEMPLATE_ID),
        token=caller,
    )

    # then
    assert elsewhere.data == {operation.field: None}
    assert elsewhere.codes == ["NOT_FOUND"]
    assert elsewhere == missing
    assert await stored(other_environment_id) == before


@every_operation
@pytest.mark.parametrize(("role", "allowed"), [(Role.DEVELOPER, True), (Role.VIEWER, False)])
async def test_a_developer_may_and_a_viewer_may_not_touch_templates(
    schema: SchemaApi, operation: Operation, role: Role, allowed: bool
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await a_published_template(owner)
    member = await factories.member_token(schema.app, owner.project_id, role)

    # when
    result = await schema.gql(
        operation.document, operation.variables(owner.environment_id, template_id), token=member
    )

    # then
    assert result.codes == ([] if allowed else ["FORBIDDEN"])


# --- createTemplate ----------------------------------------------------------------------------


async def test_creating_a_template_returns_an_unpublished_draft(api: Api) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await create_template(
        api,
        owner.token,
        owner.environment_id,
        name="Invoice",
        content="<p>Dear {{ customer }},</p>\n",
        format="HTML",
    )

    # then
    created = result.ok()["createTemplate"]
    assert created == {
        "id": ANY,
        "name": "Invoice",
        "format": "HTML",
        "content": "<p>Dear {{ customer }},</p>\n",
        "publishedVersion": None,
        "latestVersion": None,
        "hasUnpublishedChanges": True,
        "createdAt": ANY,
        "updatedAt": ANY,
        "versions": [],
    }
    assert created["id"].startswith("tpl_")
    assert created == await read_template(api, owner.token, created["id"])


@pytest.mark.parametrize("format", ["HTML", "MARKDOWN", "TEXT"])
async def test_a_key_with_manage_templates_creates_templates_of_each_format(
    schema: SchemaApi, format: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    _, secret = await factories.key_pair(owner.user_id, owner.environment_id, ["MANAGE_TEMPLATES"])

    # when
    result = await create_template(schema, secret, owner.environment_id, format=format)

    # then
    assert result.ok()["createTemplate"]["format"] == format


async def test_a_name_of_64_characters_is_accepted_and_the_same_name_in_another_environment(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    other_environment_id = (await factories.environment(project_id=owner.project_id)).id

    # when
    first = await create_template(schema, owner.token, owner.environment_id, name="n" * 64)
    second = await create_template(schema, owner.token, other_environment_id, name="n" * 64)

    # then
    assert first.ok()["createTemplate"]["name"] == "n" * 64
    assert second.ok()["createTemplate"]["name"] == "n" * 64


async def test_a_name_taken_in_the_environment_is_a_conflict(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    await new_template(schema, owner.token, owner.environment_id, name="invoice")

    # when
    result = await create_template(schema, owner.token, owner.environment_id, name="invoice")

    # then
    assert result.data == {"createTemplate": None}
    assert result.codes == ["CONFLICT"]
    assert await Template.filter(environment_id=owner.environment_id).count() == 1


@pytest.mark.parametrize("name", ["", "   ", "n" * 65, "tab\there"])
async def test_a_name_outside_1_to_64_printable_characters_is_refused(
    schema: SchemaApi, name: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create_template(schema, owner.token, owner.environment_id, name=name)

    # then
    assert bad_input(result)[0] == "name"
    assert await Template.filter(environment_id=owner.environment_id).count() == 0


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("Hello\n{% if %}\n", 2, "Expected an expression"),
        ("{% for x in items %}\n{{ x }}\n", 2, "Unexpected end of template"),
        ("a\nb\n{{ total|no_such_filter }}", 3, "No filter named 'no_such_filter'"),
        ("{{ name }", 1, "unexpected '}'"),
    ],
)
async def test_a_syntax_error_is_bad_content_naming_its_line(
    schema: SchemaApi, content: str, line: int, words: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create_template(schema, owner.token, owner.environment_id, content=content)

    # then
    field, message = bad_input(result)
    assert field == "content"
    assert f"line {line}" in message
    assert words in message


async def test_a_template_nesting_blocks_too_deeply_to_compile_is_bad_content(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    content = "{% for a in b %}" * 30 + "x" + "{% endfor %}" * 30

    # when
    result = await create_template(schema, owner.token, owner.environment_id, content=content)

    # then
    assert bad_input(result) == (
        "content",
        "The template nests blocks or expressions too deeply to compile.",
    )


async def test_content_up_to_256_kib_is_accepted_and_beyond_is_refused(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    limit = 256 * 1024

    # when
    fits = await create_template(
        schema, owner.token, owner.environment_id, name="fits", content="é" * (limit // 2)
    )
    too_big = await create_template(
        schema, owner.token, owner.environment_id, name="big", content="é" * (limit // 2) + "x"
    )

    # then
    assert len(fits.ok()["createTemplate"]["content"]) == limit // 2
    assert bad_input(too_big) == (
        "content",
        "content is 262,145 bytes; templates are limited to 262,144 bytes.",
    )


async def test_content_with_a_nul_character_is_refused(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create_template(schema, owner.token, owner.environment_id, content="a\x00b")

    # then
    assert bad_input(result) == ("content", "content must not contain NUL characters.")


async def test_an_unknown_format_is_bad_input(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await create_template(schema, owner.token, owner.environment_id, format="PDF")

    # then
    assert result.codes == ["BAD_USER_INPUT"]
    assert await Template.filter(environment_id=owner.environment_id).count() == 0


# --- updateTemplate ----------------------------------------------------------------------------


async def test_updating_renames_and_edits_the_draft(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id)
    before = await read_template(schema, owner.token, template_id)

    # when
    result = await schema.gql(
        UPDATE_TEMPLATE,
        {"input": {"id": template_id, "name": "Receipt", "content": "Thanks {{ name }}"}},
        token=owner.token,
    )

    # then
    updated = result.ok()["updateTemplate"]
    assert updated == {
        **before,
        "name": "Receipt",
        "content": "Thanks {{ name }}",
        "updatedAt": ANY,
    }
    assert datetime.fromisoformat(updated["updatedAt"]) > datetime.fromisoformat(
        before["updatedAt"]
    )
    assert updated == await read_template(schema, owner.token, template_id)


async def test_an_update_with_nothing_to_change_changes_nothing(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id)
    before = await read_template(schema, owner.token, template_id)

    # when
    result = await schema.gql(UPDATE_TEMPLATE, {"input": {"id": template_id}}, token=owner.token)

    # then
    assert result.ok()["updateTemplate"] == before


async def test_a_bad_update_changes_nothing(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id)
    await new_template(schema, owner.token, owner.environment_id, name="taken")
    before = await stored(owner.environment_id)

    # when
    syntax = await schema.gql(
        UPDATE_TEMPLATE,
        {"input": {"id": template_id, "name": "fine", "content": "{{ oops"}},
        token=owner.token,
    )
    empty_name = await schema.gql(
        UPDATE_TEMPLATE, {"input": {"id": template_id, "name": ""}}, token=owner.token
    )
    taken = await schema.gql(
        UPDATE_TEMPLATE, {"input": {"id": template_id, "name": "taken"}}, token=owner.token
    )

    # then
    assert bad_input(syntax)[0] == "content"
    assert "line 1" in bad_input(syntax)[1]
    assert bad_input(empty_name)[0] == "name"
    assert taken.codes == ["CONFLICT"]
    assert await stored(owner.environment_id) == before


# --- publishing and versions -------------------------------------------------------------------


async def test_publishing_freezes_version_1_and_records_the_event(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema, owner.token, owner.environment_id, content="v1 {{ a }}"
    )

    # when
    result = await schema.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)

    # then
    published = result.ok()["publishTemplate"]
    assert published == {
        "id": template_id,
        "name": "invoice",
        "format": "TEXT",
        "content": "v1 {{ a }}",
        "publishedVersion": 1,
        "latestVersion": 1,
        "hasUnpublishedChanges": False,
        "createdAt": ANY,
        "updatedAt": ANY,
        "versions": [
            {
                "version": 1,
                "content": "v1 {{ a }}",
                "publishedAt": ANY,
                "publishedBy": {"id": owner.user_id},
            }
        ],
    }
    [event] = await events(ActivityKind.TEMPLATE_PUBLISHED)
    assert (event.project_id, event.environment_id) == (  # type: ignore[attr-defined]
        owner.project_id,
        owner.environment_id,
    )
    assert (event.actor, event.target, event.ip) == (
        f"user:{owner.user_id}",
        f"template:{template_id} v1 invoice",
        CLIENT_IP,
    )


async def test_editing_after_publishing_leaves_the_published_version_until_the_next_publish(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema, owner.token, owner.environment_id, content="v1", publish=True
    )

    # when
    edited = (
        await schema.gql(
            UPDATE_TEMPLATE, {"input": {"id": template_id, "content": "v2"}}, token=owner.token
        )
    ).ok()["updateTemplate"]
    republished = (await schema.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)).ok()[
        "publishTemplate"
    ]

    # then
    assert (edited["content"], edited["publishedVersion"], edited["latestVersion"]) == ("v2", 1, 1)
    assert edited["hasUnpublishedChanges"] is True
    assert [v["content"] for v in edited["versions"]] == ["v1"]
    assert (republished["publishedVersion"], republished["latestVersion"]) == (2, 2)
    assert republished["hasUnpublishedChanges"] is False
    assert [(v["version"], v["content"]) for v in republished["versions"]] == [
        (2, "v2"),
        (1, "v1"),
    ]
    assert [e.target for e in await events(ActivityKind.TEMPLATE_PUBLISHED)] == [
        f"template:{template_id} v1 invoice",
        f"template:{template_id} v2 invoice",
    ]


async def test_an_edit_back_to_the_latest_version_has_no_unpublished_changes(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(
        schema, owner.token, owner.environment_id, content="v1", publish=True
    )
    (
        await schema.gql(
            UPDATE_TEMPLATE, {"input": {"id": template_id, "content": "v2"}}, token=owner.token
        )
    ).ok()

    # when
    reverted = (
        await schema.gql(
            UPDATE_TEMPLATE, {"input": {"id": template_id, "content": "v1"}}, token=owner.token
        )
    ).ok()["updateTemplate"]

    # then
    assert reverted["hasUnpublishedChanges"] is False


async def test_publishing_an_unchanged_draft_again_freezes_nothing_new(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)
    before = await read_template(schema, owner.token, template_id)

    # when
    again = (await schema.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)).ok()

    # then
    assert again["publishTemplate"] == before
    assert len(await events(ActivityKind.TEMPLATE_PUBLISHED)) == 1


async def test_unpublishing_keeps_the_versions_and_publishing_again_reuses_the_latest(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)

    # when
    unpublished = (
        await schema.gql(UNPUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)
    ).ok()["unpublishTemplate"]
    unpublished_again = (
        await schema.gql(UNPUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)
    ).ok()["unpublishTemplate"]
    republished = (await schema.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=owner.token)).ok()[
        "publishTemplate"
    ]

    # then
    assert (unpublished["publishedVersion"], unpublished["latestVersion"]) == (None, 1)
    assert unpublished["hasUnpublishedChanges"] is False
    assert unpublished_again == unpublished
    assert (republished["publishedVersion"], republished["latestVersion"]) == (1, 1)
    assert [v["version"] for v in republished["versions"]] == [1]
    assert len(await events(ActivityKind.TEMPLATE_PUBLISHED)) == 2


async def test_a_key_publishing_is_logged_as_the_key_and_its_creator_published_the_version(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    key_id, secret = await factories.key_pair(
        owner.user_id, owner.environment_id, ["MANAGE_TEMPLATES"]
    )
    template_id = await new_template(schema, secret, owner.environment_id)

    # when
    result = await schema.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=secret)

    # then
    assert result.ok()["publishTemplate"]["versions"][0]["publishedBy"] == {"id": owner.user_id}
    [event] = await events(ActivityKind.TEMPLATE_PUBLISHED)
    assert event.actor == f"key:{key_id}"


# --- deleteTemplate ----------------------------------------------------------------------------


async def test_deleting_returns_the_template_as_it_was_and_it_is_gone(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, publish=True)
    before = await read_template(schema, owner.token, template_id)

    # when
    result = await schema.gql(DELETE_TEMPLATE, {"id": template_id}, token=owner.token)
    after = await schema.gql(GET_TEMPLATE, {"id": template_id}, token=owner.token)
    again = await schema.gql(DELETE_TEMPLATE, {"id": template_id}, token=owner.token)

    # then
    assert result.ok()["deleteTemplate"] == before
    assert after.codes == ["NOT_FOUND"]
    assert again.codes == ["NOT_FOUND"]
    assert await TemplateVersion.filter(template_id=template_id).count() == 0


async def test_a_deleted_name_can_be_used_again(schema: SchemaApi) -> None:
    # given
    owner = await factories.tenant(schema.app)
    template_id = await new_template(schema, owner.token, owner.environment_id, name="reused")
    (await schema.gql(DELETE_TEMPLATE, {"id": template_id}, token=owner.token)).ok()

    # when
    result = await create_template(schema, owner.token, owner.environment_id, name="reused")

    # then
    assert result.ok()["createTemplate"]["id"] != template_id


# --- templates and template ----------------------------------------------------------------------


async def test_templates_are_listed_newest_first_in_pages(app: Starlette) -> None:
    # given
    owner = await factories.tenant(app)
    for name in ("a", "b", "c"):
        await factories.template(
            environment_id=owner.environment_id, created_by_id=owner.user_id, name=name
        )

    # when
    first = (
        await execute(
            app, LIST_TEMPLATES, {"env": owner.environment_id, "first": 2}, credential=owner.token
        )
    ).ok()["templates"]
    rest = (
        await execute(
            app,
            LIST_TEMPLATES,
            {"env": owner.environment_id, "first": 2, "after": first["pageInfo"]["endCursor"]},
            credential=owner.token,
        )
    ).ok()["templates"]

    # then
    assert [e["node"]["name"] for e in first["edges"]] == ["c", "b"]
    assert first["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["name"] for e in rest["edges"]] == ["a"]
    assert rest["pageInfo"] == {
        "hasNextPage": False,
        "hasPreviousPage": True,
        "endCursor": rest["edges"][0]["cursor"],
    }


async def test_templates_filter_on_being_published_and_stay_in_their_environment(
    schema: SchemaApi,
) -> None:
    # given
    owner = await factories.tenant(schema.app)
    other_environment_id = (await factories.environment(project_id=owner.project_id)).id
    await new_template(schema, owner.token, owner.environment_id, name="draft")
    await new_template(schema, owner.token, owner.environment_id, name="live", publish=True)
    await new_template(schema, owner.token, other_environment_id, name="elsewhere")

    async def names(**arguments: Any) -> list[str]:
        result = await schema.gql(
            LIST_TEMPLATES, {"env": owner.environment_id, **arguments}, token=owner.token
        )
        return [e["node"]["name"] for e in result.ok()["templates"]["edges"]]

    # when / then
    assert await names() == ["live", "draft"]
    assert await names(published=True) == ["live"]
    assert await names(published=False) == ["draft"]


@pytest.mark.parametrize(
    ("arguments", "field"),
    [({"first": 0}, "first"), ({"first": 101}, "first"), ({"after": "nonsense!"}, "after")],
)
async def test_a_bad_page_request_is_bad_input(
    schema: SchemaApi, arguments: dict[str, Any], field: str
) -> None:
    # given
    owner = await factories.tenant(schema.app)

    # when
    result = await schema.gql(
        LIST_TEMPLATES, {"env": owner.environment_id, **arguments}, token=owner.token
    )

    # then
    assert bad_input(result)[0] == field
