"""A bare Strawberry + Starlette app: the ceiling keyplane is measured against.

It serves `{ hello }`, `{ __typename }`, batches of up to 25 operations, and the same key-list
shape as keyplane (`environment(id) { apiKeys(first: N) { edges { node { ... } } } }`, field
names copied from src/keyplane/schema/schema.graphql) from objects held in memory, with
Strawberry's ParserCache and ValidationCache: bare Strawberry as its documentation sets it up.
keyplane caches the same two steps without Strawberry's extension hooks
(src/keyplane/schema/query_cache.py), which is part of what it is measured on. No
authentication, no rate limit, no database.

    uvicorn reference:app --app-dir bench --no-access-log
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import strawberry
from starlette.applications import Starlette
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.schema.config import StrawberryConfig

MAX_BATCH = 25
KEY_COUNT = 100
ENVIRONMENT_ID = "env_reference000000000000"
# The key page both servers are asked for (`%d`: the page size); valid against both schemas.
KEY_PAGE = """query($e: ID!) { environment(id: $e) { apiKeys(first: %d) { edges { node {
  id name prefix scopes status createdAt lastUsedAt totalRequests
  environment { id name } createdBy { id email } } } } } }"""


@strawberry.enum(description="What an API key, token or role may do.")
class Scope(StrEnum):
    GENERATE_DOCUMENTS = "GENERATE_DOCUMENTS"
    MANAGE_TEMPLATES = "MANAGE_TEMPLATES"
    VIEW_ANALYTICS = "VIEW_ANALYTICS"
    MANAGE_PROJECT = "MANAGE_PROJECT"


@strawberry.enum(description="Whether a key authenticates requests now.")
class ApiKeyStatus(StrEnum):
    ACTIVE = "ACTIVE"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


@strawberry.type(description="A person who signs in to the dashboard.")
class User:
    id: strawberry.ID
    email: str


@strawberry.type(description="One key in a page.")
class ApiKeyEdge:
    cursor: str
    node: ApiKey


@strawberry.type(description="A page of API keys, newest first.")
class ApiKeyConnection:
    edges: list[ApiKeyEdge]


@strawberry.type(description="An environment: keys live here.")
class Environment:
    id: strawberry.ID
    name: str
    keys: strawberry.Private[list[ApiKey]]

    @strawberry.field(description="This environment's API keys, newest first.")
    def api_keys(self, first: int = 20) -> ApiKeyConnection:
        page = self.keys[: max(0, min(first, 100))]
        return ApiKeyConnection(edges=[ApiKeyEdge(cursor=key.id, node=key) for key in page])


@strawberry.type(description="An API key, as keyplane lists it.")
class ApiKey:
    id: strawberry.ID
    name: str
    prefix: str
    scopes: list[Scope]
    status: ApiKeyStatus
    created_at: datetime
    last_used_at: datetime | None
    total_requests: int
    environment: Environment
    created_by: User


@dataclass(frozen=True)
class Store:
    environment: Environment


def build_store(count: int = KEY_COUNT) -> Store:
    user = User(id=strawberry.ID("usr_reference0000000000"), email="bench@example.com")
    environment = Environment(id=strawberry.ID(ENVIRONMENT_ID), name="Production", keys=[])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(count):
        environment.keys.append(
            ApiKey(
                id=strawberry.ID(f"key_reference{n:012d}"),
                name=f"bench key {n}",
                prefix=f"fm_ref{n:05d}"[:11],
                scopes=[Scope.GENERATE_DOCUMENTS, Scope.VIEW_ANALYTICS],
                status=ApiKeyStatus.ACTIVE,
                created_at=start + timedelta(seconds=count - n),
                last_used_at=None,
                total_requests=0,
                environment=environment,
                created_by=user,
            )
        )
    return Store(environment=environment)


STORE = build_store()


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "Hello World"

    @strawberry.field
    def environment(self, id: strawberry.ID) -> Environment | None:
        return STORE.environment if id == STORE.environment.id else None


schema = strawberry.Schema(
    query=Query,
    config=StrawberryConfig(
        disable_field_suggestions=True, batching_config={"max_operations": MAX_BATCH}
    ),
    extensions=[ParserCache, ValidationCache],
)


def create_app() -> Starlette:
    # Mounted in Starlette as keyplane is (the bare GraphQL app refuses the lifespan scope).
    view = GraphQL[None, None](schema, graphql_ide=None)
    return Starlette(routes=[Route("/graphql", view, methods=["GET", "POST"])])


app = create_app()
