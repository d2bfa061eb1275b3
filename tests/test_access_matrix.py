"""Who may do what: every principal kind against every operation, on objects of two projects.

The world: project A (owned by ada) with environments A1 and A2, project B (owned by bob) with
B1 and B2, an API key in each of the four environments, and `?` ids that name nothing. The
callers are the columns of EXPECTED; each row is one operation on one object, and each cell
the outcome: the code of the first GraphQL error, or OK.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from keyplane.models import Member, MemberEnvironment, User
from keyplane.models.base import new_id
from keyplane.permissions.scopes import Role
from tests.helpers import Api

PASSWORD = "correct horse"
OWNER_A = "ada@example.com"
OWNER_B = "bob@example.com"
ADMIN_A1 = "adam@example.com"
VIEWER_A = "vera@example.com"

# Columns:
#   owner  ada, OWNER of project A (dashboard JWT)   k:gen  API key in A1 with GENERATE_DOCUMENTS
#   admA1  ADMIN of A, limited to environment A1     k:tpl  ... with MANAGE_TEMPLATES
#   view   VIEWER of A, all environments             k:ana  ... with VIEW_ANALYTICS
#   o:ana  ada's OAuth token, scope analytics:view   k:mgr  ... with MANAGE_PROJECT
#   o:mgr  ada's OAuth token, scope project:manage   anon   no credentials
# Cells: OK, UA = UNAUTHENTICATED, FB = FORBIDDEN, NF = NOT_FOUND.
# `node.X` rows fetch X's object through `node(id)`: they must read as the rows of X.
# Targets: projects A, B; environments A1, A2, B1; for key operations, a key in that
# environment (reads use the world's key there, mutations a fresh one); `?` an unknown id.
EXPECTED = """
operation                  owner  admA1  view   k:gen  k:tpl  k:ana  k:mgr  o:ana  o:mgr  anon
viewer                     OK     OK     OK     OK     OK     OK     OK     OK     OK     OK
projects                   OK     OK     OK     OK     OK     OK     OK     OK     OK     UA
project(A)                 OK     OK     OK     OK     OK     OK     OK     OK     OK     UA
project(B)                 NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
project(?)                 NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
environment(A1)            OK     OK     OK     OK     OK     OK     OK     OK     OK     UA
environment(A2)            OK     NF     OK     NF     NF     NF     NF     OK     OK     UA
environment(B1)            NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
environment(?)             NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
environment.apiKeys(A1)    OK     OK     OK     FB     FB     OK     OK     OK     OK     UA
environment.apiKeys(A2)    OK     NF     OK     NF     NF     NF     NF     OK     OK     UA
environment.apiKeys(B1)    NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
apiKey(A1)                 OK     OK     OK     FB     FB     OK     OK     OK     OK     UA
apiKey(A2)                 OK     NF     OK     NF     NF     NF     NF     OK     OK     UA
apiKey(B1)                 NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
apiKey(?)                  NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
createProject              OK     OK     OK     FB     FB     FB     FB     FB     OK     UA
createEnvironment(A)       OK     FB     FB     FB     FB     FB     FB     FB     OK     UA
createEnvironment(B)       NF     NF     NF     FB     FB     FB     FB     FB     NF     UA
createEnvironment(?)       NF     NF     NF     FB     FB     FB     FB     FB     NF     UA
createApiKey(A1)           OK     OK     FB     FB     FB     FB     OK     FB     OK     UA
createApiKey(A2)           OK     NF     FB     FB     FB     FB     NF     FB     OK     UA
createApiKey(B1)           NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
createApiKey(?)            NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
updateApiKey(A1)           OK     OK     FB     FB     FB     FB     OK     FB     OK     UA
updateApiKey(A2)           OK     NF     FB     FB     FB     FB     NF     FB     OK     UA
updateApiKey(B1)           NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
updateApiKey(?)            NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
revokeApiKey(A1)           OK     OK     FB     FB     FB     FB     OK     FB     OK     UA
revokeApiKey(A2)           OK     NF     FB     FB     FB     FB     NF     FB     OK     UA
revokeApiKey(B1)           NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
revokeApiKey(?)            NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
deleteApiKey(A1)           OK     OK     FB     FB     FB     FB     OK     FB     OK     UA
deleteApiKey(A2)           OK     NF     FB     FB     FB     FB     NF     FB     OK     UA
deleteApiKey(B1)           NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
deleteApiKey(?)            NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
rotateApiKey(A1)           OK     OK     FB     FB     FB     FB     OK     FB     OK     UA
rotateApiKey(A2)           OK     NF     FB     FB     FB     FB     NF     FB     OK     UA
rotateApiKey(B1)           NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
rotateApiKey(?)            NF     NF     NF     FB     FB     FB     NF     FB     NF     UA
logOut                     OK     OK     OK     FB     FB     FB     FB     FB     FB     UA
node.project(A)            OK     OK     OK     OK     OK     OK     OK     OK     OK     UA
node.project(B)            NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
node.project(?)            NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
node.environment(A1)       OK     OK     OK     OK     OK     OK     OK     OK     OK     UA
node.environment(A2)       OK     NF     OK     NF     NF     NF     NF     OK     OK     UA
node.environment(B1)       NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
node.environment(?)        NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
node.apiKey(A1)            OK     OK     OK     FB     FB     OK     OK     OK     OK     UA
node.apiKey(A2)            OK     NF     OK     NF     NF     NF     NF     OK     OK     UA
node.apiKey(B1)            NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
node.apiKey(?)             NF     NF     NF     NF     NF     NF     NF     NF     NF     UA
"""

# The environments each caller sees under `projects { environments }` (row `projects`).
VISIBLE_ENVIRONMENTS: dict[str, dict[str, list[str]] | None] = {
    "owner": {"A": ["A1", "A2"]},
    "admA1": {"A": ["A1"]},
    "view": {"A": ["A1", "A2"]},
    "k:gen": {"A": ["A1"]},
    "k:tpl": {"A": ["A1"]},
    "k:ana": {"A": ["A1"]},
    "k:mgr": {"A": ["A1"]},
    "o:ana": {"A": ["A1", "A2"]},
    "o:mgr": {"A": ["A1", "A2"]},
    "anon": None,
}

CODES = {
    "OK": "OK",
    "UA": "UNAUTHENTICATED",
    "FB": "FORBIDDEN",
    "NF": "NOT_FOUND",
}

KEY_SCOPES = {
    "k:gen": "GENERATE_DOCUMENTS",
    "k:tpl": "MANAGE_TEMPLATES",
    "k:ana": "VIEW_ANALYTICS",
    "k:mgr": "MANAGE_PROJECT",
}
OAUTH_SCOPES = {"o:ana": "analytics:view", "o:mgr": "project:manage"}
MISSING = "?"


def parse_table(text: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """(columns, {column: {row: code}}) from the whitespace-aligned EXPECTED table."""
    header, *lines = [line.split() for line in text.strip().splitlines()]
    columns = header[1:]
    table: dict[str, dict[str, str]] = {column: {} for column in columns}
    for row, *cells in lines:
        assert len(cells) == len(columns), row
        for column, cell in zip(columns, cells, strict=True):
            table[column][row] = CODES[cell]
    return columns, table


PRINCIPALS, EXPECTED_BY_PRINCIPAL = parse_table(EXPECTED)


@dataclass
class World:
    api: Api
    tokens: dict[str, str]  # email -> dashboard JWT
    projects: dict[str, str]  # label -> id
    environments: dict[str, str]  # label -> id
    keys: dict[str, str]  # environment label -> id of a key there
    names: itertools.count[int] = field(default_factory=itertools.count)

    def owner_of(self, label: str) -> str:
        return self.tokens[OWNER_A if label.startswith("A") else OWNER_B]

    def unique(self, stem: str) -> str:
        return f"{stem}-{next(self.names)}"

    def project(self, label: str) -> str:
        return new_id("prj") if label == MISSING else self.projects[label]

    def environment(self, label: str) -> str:
        return new_id("env") if label == MISSING else self.environments[label]

    async def fresh_key(self, label: str) -> str:
        """A key that only this row touches, so revoking or deleting it disturbs no other."""
        if label == MISSING:
            return new_id("key")
        key_id, _ = await self.api.create_key(
            self.owner_of(label), self.environments[label], ["MANAGE_PROJECT"], name="target"
        )
        return key_id


async def build_world(api: Api) -> World:
    tokens = {email: await api.sign_up(email, PASSWORD) for email in (OWNER_A, OWNER_B)}
    world = World(api=api, tokens=tokens, projects={}, environments={}, keys={})
    for project in ("A", "B"):
        project_id = await api.create_project(world.owner_of(project), f"Project {project}")
        world.projects[project] = project_id
        for label in (f"{project}1", f"{project}2"):
            world.environments[label] = await api.create_environment(
                world.owner_of(project), project_id, label
            )
            world.keys[label], _ = await api.create_key(
                world.owner_of(project), world.environments[label], ["VIEW_ANALYTICS"]
            )
    for email in (ADMIN_A1, VIEWER_A):
        world.tokens[email] = await api.sign_up(email, PASSWORD)
    admin = await Member.create(
        project_id=world.projects["A"],
        user=await User.get(email=ADMIN_A1),
        role=Role.ADMIN,
        all_environments=False,
    )
    await MemberEnvironment.create(member=admin, environment_id=world.environments["A1"])
    await Member.create(
        project_id=world.projects["A"],
        user=await User.get(email=VIEWER_A),
        role=Role.VIEWER,
        all_environments=True,
    )
    return world


async def credential_of(world: World, principal: str) -> str | None:
    if principal == "anon":
        return None
    if principal in KEY_SCOPES:
        _, secret = await world.api.create_key(
            world.tokens[OWNER_A], world.environments["A1"], [KEY_SCOPES[principal]], name=principal
        )
        return secret
    if principal in OAUTH_SCOPES:
        return world.api.oauth.token(
            sub="ada-at-issuer", email=OWNER_A, scope=OAUTH_SCOPES[principal]
        )
    email = {"owner": OWNER_A, "admA1": ADMIN_A1, "view": VIEWER_A}[principal]
    return world.tokens[email]


async def fresh_session(world: World, credential: str | None) -> str | None:
    """logOut ends the session it is called with: give it one of its own, for the same user."""
    for email, token in world.tokens.items():
        if token == credential:
            result = await world.api.gql(
                "mutation($input: LogInInput!) { logIn(input: $input) { accessToken } }",
                {"input": {"email": email, "password": PASSWORD}},
            )
            fresh: str = result.ok()["logIn"]["accessToken"]
            return fresh
    return credential


Variables = Callable[[World, str], Awaitable[dict[str, Any]]]


async def no_variables(world: World, target: str) -> dict[str, Any]:
    return {}


async def project_id(world: World, target: str) -> dict[str, Any]:
    return {"id": world.project(target)}


async def environment_id(world: World, target: str) -> dict[str, Any]:
    return {"id": world.environment(target)}


async def existing_key_id(world: World, target: str) -> dict[str, Any]:
    return {"id": world.keys[target] if target != MISSING else new_id("key")}


async def fresh_key_id(world: World, target: str) -> dict[str, Any]:
    return {"id": await world.fresh_key(target)}


async def create_project_input(world: World, target: str) -> dict[str, Any]:
    return {"input": {"name": world.unique("project")}}


async def create_environment_input(world: World, target: str) -> dict[str, Any]:
    return {"input": {"projectId": world.project(target), "name": world.unique("env")}}


async def create_api_key_input(world: World, target: str) -> dict[str, Any]:
    environment = world.environment(target)
    return {"input": {"environmentId": environment, "name": "new", "scopes": ["MANAGE_PROJECT"]}}


async def update_api_key_input(world: World, target: str) -> dict[str, Any]:
    return {"input": {"id": await world.fresh_key(target), "name": "renamed"}}


async def rotate_api_key_input(world: World, target: str) -> dict[str, Any]:
    return {"input": {"id": await world.fresh_key(target), "expireOldInSeconds": 0}}


OPERATIONS: dict[str, tuple[str, Variables]] = {
    "viewer": ("{ viewer { kind } }", no_variables),
    "projects": ("{ projects { id environments { id } } }", no_variables),
    "project": ("query($id: ID!) { project(id: $id) { id } }", project_id),
    "environment": ("query($id: ID!) { environment(id: $id) { id } }", environment_id),
    "environment.apiKeys": (
        "query($id: ID!) { environment(id: $id) { apiKeys { edges { node { id } } } } }",
        environment_id,
    ),
    "apiKey": ("query($id: ID!) { apiKey(id: $id) { id } }", existing_key_id),
    "createProject": (
        "mutation($input: CreateProjectInput!) { createProject(input: $input) { id } }",
        create_project_input,
    ),
    "createEnvironment": (
        "mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id } }",
        create_environment_input,
    ),
    "createApiKey": (
        "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }",
        create_api_key_input,
    ),
    "updateApiKey": (
        "mutation($input: UpdateApiKeyInput!) { updateApiKey(input: $input) { id } }",
        update_api_key_input,
    ),
    "revokeApiKey": ("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", fresh_key_id),
    "deleteApiKey": ("mutation($id: ID!) { deleteApiKey(id: $id) { id } }", fresh_key_id),
    "rotateApiKey": (
        "mutation($input: RotateApiKeyInput!) { rotateApiKey(input: $input) { secret } }",
        rotate_api_key_input,
    ),
    "logOut": ("mutation { logOut }", no_variables),
    "node.project": ("query($id: ID!) { node(id: $id) { id } }", project_id),
    "node.environment": ("query($id: ID!) { node(id: $id) { id } }", environment_id),
    "node.apiKey": ("query($id: ID!) { node(id: $id) { id } }", existing_key_id),
}


def visible_environments(world: World, body: Any) -> dict[str, list[str]] | None:
    """{project label: [environment labels]} from the body of `projects`."""
    if body["data"] is None or body["data"]["projects"] is None:
        return None
    labels = {v: k for k, v in {**world.projects, **world.environments}.items()}
    return {
        labels[project["id"]]: [labels[env["id"]] for env in project["environments"]]
        for project in body["data"]["projects"]
    }


def split_row(row: str) -> tuple[str, str]:
    """`apiKey(A1)` -> ("apiKey", "A1"); `viewer` -> ("viewer", "")."""
    operation, _, target = row.partition("(")
    return operation, target.removesuffix(")")


async def outcome(world: World, row: str, credential: str | None) -> tuple[str, Any]:
    operation, target = split_row(row)
    document, variables = OPERATIONS[operation]
    if operation == "logOut":
        credential = await fresh_session(world, credential)
    result = await world.api.gql(document, await variables(world, target), token=credential)
    assert result.status == 200, (row, result.status, result.body)
    if result.errors:
        return str(result.codes[0]), result.body
    assert all(value is not None for value in result.data.values()), (row, result.body)
    return "OK", result.body


def test_every_operation_appears_in_the_table() -> None:
    operations = {split_row(row)[0] for row in EXPECTED_BY_PRINCIPAL["owner"]}
    assert operations == set(OPERATIONS)


def test_fetching_by_node_is_allowed_exactly_where_the_typed_lookup_is() -> None:
    for principal, column in EXPECTED_BY_PRINCIPAL.items():
        for row, code in column.items():
            if row.startswith("node."):
                assert code == column[row.removeprefix("node.")], (principal, row)


@pytest.mark.parametrize("principal", PRINCIPALS)
async def test_each_principal_gets_exactly_the_outcomes_in_its_column(
    api: Api, principal: str
) -> None:
    # given
    world = await build_world(api)
    credential = await credential_of(world, principal)
    expected = EXPECTED_BY_PRINCIPAL[principal]

    # when
    results = {row: await outcome(world, row, credential) for row in expected}

    # then
    assert {row: code for row, (code, _) in results.items()} == expected
    # An object out of reach answers exactly as one that does not exist.
    for row, (code, body) in results.items():
        missing = f"{split_row(row)[0]}({MISSING})"
        if code == "NOT_FOUND" and missing in results:
            assert body == results[missing][1], row
    # Lists are filtered the same way: only reachable environments are shown.
    assert visible_environments(world, results["projects"][1]) == VISIBLE_ENVIRONMENTS[principal]
