"""Partial data: a refused field is null with its own error, and nothing else is lost.

Every field that can refuse its caller (a permission, NOT_FOUND, a scope checked by its
resolver) is nullable; `keyplane.schema.permissions.guarded_fields` says which those are.
A user's email is its own person's to read, and otherwise needs MANAGE_PROJECT where the user
was reached (what `members` needs): a key holder is not its key's creator.
"""

from __future__ import annotations

from typing import Any

import strawberry
from strawberry.permission import PermissionExtension

from keyplane.permissions.scopes import Role
from keyplane.schema.permissions import IsAuthenticated, guarded_fields, may_refuse
from keyplane.schema.root import schema
from tests.factories import add_member
from tests.helpers import Api, new_tenant
from tests.template_helpers import generate, new_template
from tests.test_query_count import counting_queries

ENVIRONMENT_WITH_KEYS = """
query($id: ID!) {
  environment(id: $id) { name apiKeys { edges { node { id } } } }
}"""

ENVIRONMENT_WITH_USAGE = """
query($id: ID!) {
  environment(id: $id) {
    name usage(from: "2026-03-01T00:00:00Z", to: "2026-03-01T01:00:00Z") { at }
  }
}"""

OWN_KEY_WITH_USAGE = """
{ viewer { apiKey {
  name usage(from: "2026-03-01T00:00:00Z", to: "2026-03-01T01:00:00Z") { at }
} } }
"""

VIEWER_AND_MEMBERS = """
query($p: ID!) { viewer { kind } members(projectId: $p) { id } }"""

VIEWER_AND_PROJECTS = "{ viewer { kind } projects { id } }"

KEY_CREATOR = """
query($id: ID!) { apiKey(id: $id) { name createdBy { id name email } } }"""

PAGE_CREATORS = """
query($id: ID!, $first: Int!) {
  environment(id: $id) { apiKeys(first: $first) { edges { node { name createdBy { email } } } } }
}"""

VIEWER_USER = "{ viewer { kind user { id email } } }"

DOCUMENT_MAKER = "query($id: ID!) { document(id: $id) { id createdBy { id email } } }"

MEMBER_USERS = "query($p: ID!) { members(projectId: $p) { role user { email } } }"


def error_at(body: Any) -> list[tuple[list[Any], str]]:
    return [(e["path"], e["extensions"]["code"]) for e in body.get("errors") or []]


# --- the schema ------------------------------------------------------------------------------


def non_null_guarded_fields(built: strawberry.Schema) -> list[str]:
    types = {t["name"]: t for t in built.introspect()["__schema"]["types"]}
    found = []
    for type_name, field_name in guarded_fields(built):
        [field] = [f for f in types[type_name]["fields"] if f["name"] == field_name]
        if field["type"]["kind"] == "NON_NULL":
            found.append(f"{type_name}.{field_name}")
    return found


def test_every_field_that_can_refuse_its_caller_is_nullable() -> None:
    assert non_null_guarded_fields(schema) == []


def test_the_guarded_fields_are_those_with_a_permission_and_those_marked() -> None:
    found = guarded_fields(schema)

    assert {
        ("Query", "projects"),
        ("Query", "members"),
        ("Query", "apiKey"),
        ("Query", "node"),
        ("Environment", "apiKeys"),
        ("Environment", "usage"),
        ("Environment", "project"),
        ("ApiKey", "usage"),
        ("Member", "user"),
        ("Document", "createdBy"),
        ("TemplateVersion", "publishedBy"),
        ("User", "email"),
        ("Mutation", "createApiKey"),
    } <= set(found)
    assert ("Query", "viewer") not in found  # open to anyone
    assert ("ApiKey", "name") not in found


# A schema whose two guarded fields are not nullable, beside one that is.
@strawberry.type(description="A thing.")
class Thing:
    @strawberry.field(description="Refusable.", metadata=may_refuse("a test"))  # type: ignore[untyped-decorator]
    def secret(self) -> str:
        return "x"


@strawberry.type(description="Root.")
class Root:
    @strawberry.field(
        description="Guarded.", extensions=[PermissionExtension(permissions=[IsAuthenticated()])]
    )  # type: ignore[untyped-decorator]
    def things(self) -> list[Thing]:
        return []

    @strawberry.field(
        description="Fine.", extensions=[PermissionExtension(permissions=[IsAuthenticated()])]
    )  # type: ignore[untyped-decorator]
    def maybe(self) -> Thing | None:
        return None


def test_the_walk_notices_a_guarded_field_that_is_not_nullable() -> None:
    assert sorted(non_null_guarded_fields(strawberry.Schema(query=Root))) == [
        "Root.things",
        "Thing.secret",
    ]


# --- one refused field nulls itself only -------------------------------------------------------


async def test_a_generate_documents_key_gets_the_environment_without_its_keys(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, generator = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])

    # when
    result = await api.gql(ENVIRONMENT_WITH_KEYS, {"id": owner.environment_id}, token=generator)

    # then
    environment = await api.gql(
        "query($id: ID!) { environment(id: $id) { name } }",
        {"id": owner.environment_id},
        token=owner.token,
    )
    name = environment.ok()["environment"]["name"]
    assert result.data == {"environment": {"name": name, "apiKeys": None}}
    assert error_at(result.body) == [(["environment", "apiKeys"], "FORBIDDEN")]


async def test_a_refused_environment_usage_nulls_the_series_only(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, generator = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])

    # when
    result = await api.gql(ENVIRONMENT_WITH_USAGE, {"id": owner.environment_id}, token=generator)

    # then
    assert result.data["environment"]["usage"] is None
    assert result.data["environment"]["name"]
    assert error_at(result.body) == [(["environment", "usage"], "FORBIDDEN")]


async def test_a_key_refused_its_own_usage_still_reads_its_name(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, generator = await api.create_key(
        owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"], name="renderer"
    )

    # when
    result = await api.gql(OWN_KEY_WITH_USAGE, token=generator)

    # then
    assert result.data == {"viewer": {"apiKey": {"name": "renderer", "usage": None}}}
    assert error_at(result.body) == [(["viewer", "apiKey", "usage"], "FORBIDDEN")]


async def test_refused_members_leave_the_rest_of_the_answer(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, analyst = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])

    # when
    result = await api.gql(VIEWER_AND_MEMBERS, {"p": owner.project_id}, token=analyst)

    # then
    assert result.data == {"viewer": {"kind": "API_KEY"}, "members": None}
    assert error_at(result.body) == [(["members"], "FORBIDDEN")]


async def test_an_anonymous_caller_gets_the_viewer_and_null_projects(api: Api) -> None:
    # when
    result = await api.gql(VIEWER_AND_PROJECTS)

    # then
    assert result.data == {"viewer": {"kind": "ANONYMOUS"}, "projects": None}
    assert error_at(result.body) == [(["projects"], "UNAUTHENTICATED")]


# --- emails ----------------------------------------------------------------------------------


async def test_a_view_analytics_key_reads_a_keys_creator_but_not_their_email(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    _, analyst = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])

    # when
    result = await api.gql(KEY_CREATOR, {"id": key_id}, token=analyst)

    # then
    assert result.data == {
        "apiKey": {
            "name": "server",
            "createdBy": {"id": owner.user_id, "name": owner.email.split("@")[0], "email": None},
        }
    }
    assert error_at(result.body) == [(["apiKey", "createdBy", "email"], "FORBIDDEN")]
    assert result.errors[0]["extensions"]["requiredScopes"] == ["MANAGE_PROJECT"]


async def test_a_manage_project_key_and_the_owner_read_a_keys_creators_email(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    key_id, _ = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    by_key = await api.gql(KEY_CREATOR, {"id": key_id}, token=manager)
    by_owner = await api.gql(KEY_CREATOR, {"id": key_id}, token=owner.token)

    # then
    assert by_key.ok()["apiKey"]["createdBy"]["email"] == owner.email
    assert by_owner.ok()["apiKey"]["createdBy"]["email"] == owner.email


async def test_a_viewer_member_reads_keys_but_not_their_creators_emails(api: Api) -> None:
    # given: three keys by the owner, read by a VIEWER (VIEW_ANALYTICS, no MANAGE_PROJECT)
    owner = await new_tenant(api)
    for _ in range(3):
        await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    viewer = await add_member(api, owner.project_id, Role.VIEWER)

    # when
    result = await api.gql(PAGE_CREATORS, {"id": owner.environment_id, "first": 3}, token=viewer)

    # then
    edges = result.data["environment"]["apiKeys"]["edges"]
    assert [edge["node"] for edge in edges] == [
        {"name": "server", "createdBy": {"email": None}}
    ] * 3
    assert error_at(result.body) == [
        (["environment", "apiKeys", "edges", n, "node", "createdBy", "email"], "FORBIDDEN")
        for n in range(3)
    ]


async def test_refusing_a_page_of_emails_costs_no_query_per_key(api: Api) -> None:
    # given: 20 keys, read by a VIEWER member
    owner = await new_tenant(api)
    for _ in range(20):
        await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    viewer = await add_member(api, owner.project_id, Role.VIEWER)
    variables = {"id": owner.environment_id}

    # when
    with counting_queries() as twenty:
        await api.gql(PAGE_CREATORS, {**variables, "first": 20}, token=viewer)
    with counting_queries() as one:
        await api.gql(PAGE_CREATORS, {**variables, "first": 1}, token=viewer)

    # then
    assert len(twenty) <= len(one) + 1, twenty  # at most the first request's cold reads


async def test_a_person_reads_their_own_email_and_a_key_its_creators_only_with_manage_project(
    api: Api,
) -> None:
    # given
    owner = await new_tenant(api)
    _, analyst = await api.create_key(owner.token, owner.environment_id, ["VIEW_ANALYTICS"])
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])
    oauth = api.oauth.token(email=owner.email, scope="documents:generate")

    # when
    by_person = await api.gql(VIEWER_USER, token=owner.token)
    by_oauth = await api.gql(VIEWER_USER, token=oauth)
    by_analyst = await api.gql(VIEWER_USER, token=analyst)
    by_manager = await api.gql(VIEWER_USER, token=manager)

    # then
    assert by_person.ok()["viewer"]["user"] == {"id": owner.user_id, "email": owner.email}
    assert by_oauth.ok()["viewer"]["user"]["email"] == owner.email
    assert by_manager.ok()["viewer"]["user"]["email"] == owner.email
    assert by_analyst.data == {
        "viewer": {"kind": "API_KEY", "user": {"id": owner.user_id, "email": None}}
    }
    assert error_at(by_analyst.body) == [(["viewer", "user", "email"], "FORBIDDEN")]


async def test_a_document_makers_email_needs_manage_project(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    template_id = await new_template(api, owner.token, owner.environment_id, publish=True)
    document_id = (await generate(api, owner.token, template_id, {"name": "Ada"})).ok()[
        "generateDocument"
    ]["id"]
    _, generator = await api.create_key(owner.token, owner.environment_id, ["GENERATE_DOCUMENTS"])

    # when
    by_key = await api.gql(DOCUMENT_MAKER, {"id": document_id}, token=generator)
    by_owner = await api.gql(DOCUMENT_MAKER, {"id": document_id}, token=owner.token)

    # then
    assert by_key.data == {
        "document": {"id": document_id, "createdBy": {"id": owner.user_id, "email": None}}
    }
    assert error_at(by_key.body) == [(["document", "createdBy", "email"], "FORBIDDEN")]
    assert by_owner.ok()["document"]["createdBy"]["email"] == owner.email


async def test_whoever_may_list_members_reads_their_emails(api: Api) -> None:
    # given
    owner = await new_tenant(api)
    _, manager = await api.create_key(owner.token, owner.environment_id, ["MANAGE_PROJECT"])

    # when
    result = await api.gql(MEMBER_USERS, {"p": owner.project_id}, token=manager)

    # then
    assert result.ok()["members"] == [{"role": "OWNER", "user": {"email": owner.email}}]
