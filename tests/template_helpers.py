"""Shared by the template, document and hostile-template tests: a world, documents, helpers."""

from __future__ import annotations

from typing import Any

from keyplane.models import ActivityEvent, Template
from keyplane.models.activity import ActivityKind
from tests import factories
from tests.helpers import Answer, Client, Result, Tenant

SINGLE_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES", "VIEW_ANALYTICS", "MANAGE_PROJECT"]
ALL_SCOPES = sorted(SINGLE_SCOPES)
OAUTH_WORDS = {
    "GENERATE_DOCUMENTS": "documents:generate",
    "MANAGE_TEMPLATES": "templates:manage",
    "VIEW_ANALYTICS": "analytics:view",
    "MANAGE_PROJECT": "project:manage",
}
MISSING_TEMPLATE_ID = "tpl_" + "0" * 20
MISSING_DOCUMENT_ID = "doc_" + "0" * 20
MISSING_ENVIRONMENT_ID = "env_" + "0" * 20
CLIENT_IP = "203.0.113.7"  # the test client's address (conftest)

TEMPLATE_FIELDS = """
fragment TemplateFields on Template {
  id name format content publishedVersion latestVersion hasUnpublishedChanges createdAt updatedAt
  versions { version content publishedAt publishedBy { id } }
}
"""

CREATE_TEMPLATE = (
    """
mutation CreateTemplate($input: CreateTemplateInput!) {
  createTemplate(input: $input) { ...TemplateFields }
}
"""
    + TEMPLATE_FIELDS
)

UPDATE_TEMPLATE = (
    """
mutation UpdateTemplate($input: UpdateTemplateInput!) {
  updateTemplate(input: $input) { ...TemplateFields }
}
"""
    + TEMPLATE_FIELDS
)

DELETE_TEMPLATE = (
    """
mutation DeleteTemplate($id: ID!) { deleteTemplate(id: $id) { ...TemplateFields } }
"""
    + TEMPLATE_FIELDS
)

PUBLISH_TEMPLATE = (
    """
mutation PublishTemplate($id: ID!) { publishTemplate(id: $id) { ...TemplateFields } }
"""
    + TEMPLATE_FIELDS
)

UNPUBLISH_TEMPLATE = (
    """
mutation UnpublishTemplate($id: ID!) { unpublishTemplate(id: $id) { ...TemplateFields } }
"""
    + TEMPLATE_FIELDS
)

GET_TEMPLATE = (
    """
query GetTemplate($id: ID!) { template(id: $id) { ...TemplateFields } }
"""
    + TEMPLATE_FIELDS
)

LIST_TEMPLATES = """
query ListTemplates($env: ID!, $first: Int! = 20, $after: String, $published: Boolean) {
  templates(environmentId: $env, first: $first, after: $after, published: $published) {
    edges { cursor node { id name publishedVersion } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}
"""

DOCUMENT_FIELDS = """
fragment DocumentFields on Document {
  id templateId templateVersion format content createdAt authKind apiKeyId createdBy { id }
}
"""

GENERATE_DOCUMENT = (
    """
mutation GenerateDocument($input: GenerateDocumentInput!) {
  generateDocument(input: $input) { ...DocumentFields }
}
"""
    + DOCUMENT_FIELDS
)

GET_DOCUMENT = (
    """
query GetDocument($id: ID!) { document(id: $id) { ...DocumentFields } }
"""
    + DOCUMENT_FIELDS
)

LIST_DOCUMENTS = """
query ListDocuments($env: ID!, $first: Int! = 20, $after: String) {
  documents(environmentId: $env, first: $first, after: $after) {
    edges { cursor node { id templateId templateVersion content } }
    pageInfo { hasNextPage hasPreviousPage endCursor }
  }
}
"""


async def create_template(
    api: Client,
    token: str,
    environment_id: str,
    *,
    name: str = "invoice",
    content: str = "Hello {{ name }}!",
    format: str = "TEXT",
) -> Answer:
    return await api.gql(
        CREATE_TEMPLATE,
        {
            "input": {
                "environmentId": environment_id,
                "name": name,
                "content": content,
                "format": format,
            }
        },
        token=token,
    )


async def new_template(
    api: Client,
    token: str,
    environment_id: str,
    *,
    name: str = "invoice",
    content: str = "Hello {{ name }}!",
    format: str = "TEXT",
    publish: bool = False,
) -> str:
    """Create a template (and publish it) as `token`; returns its id."""
    result = await create_template(
        api, token, environment_id, name=name, content=content, format=format
    )
    template_id: str = result.ok()["createTemplate"]["id"]
    if publish:
        (await api.gql(PUBLISH_TEMPLATE, {"id": template_id}, token=token)).ok()
    return template_id


async def generate(api: Client, token: str, template_id: str, data: Any) -> Answer:
    return await api.gql(
        GENERATE_DOCUMENT, {"input": {"templateId": template_id, "data": data}}, token=token
    )


async def read_template(api: Client, token: str, template_id: str) -> dict[str, Any]:
    found: dict[str, Any] = (await api.gql(GET_TEMPLATE, {"id": template_id}, token=token)).ok()[
        "template"
    ]
    return found


async def published_template(
    owner: Tenant, environment_id: str | None = None, *, draft: str = "Hello {{ name }}!"
) -> Template:
    """The owner's template "invoice" (a row, built directly) in their first environment or the
    one named, with version 1 ("Hello {{ name }}!") published and `draft` as its draft."""
    return await factories.template(
        environment_id=environment_id or owner.environment_id,
        created_by_id=owner.user_id,
        name="invoice",
        content=draft,
        versions=["Hello {{ name }}!"],
    )


async def events(kind: ActivityKind) -> list[ActivityEvent]:
    """The activity rows of one kind, oldest first, read from the database."""
    return await ActivityEvent.filter(kind=kind).order_by("at", "id")


def bad_input(result: Answer) -> tuple[str, str]:
    """(field, message) of a single BAD_USER_INPUT error, asserting that it is one."""
    if isinstance(result, Result):
        assert result.status == 200, result.body
    assert result.codes == ["BAD_USER_INPUT"], result.errors
    error = result.errors[0]
    return error["extensions"]["field"], error["message"]
