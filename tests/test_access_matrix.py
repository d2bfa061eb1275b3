"""Who may do what, generated: every rule of permissions/rules.py against every kind of caller.

The world: project P (owned by ada) with environments E1 and E2, and project Q (owned by quinn)
with one environment. Every operation acts on E1 or on an object in E1 (or on P). The expected
answer of each (rule, caller) is computed from the rule and from what the caller is (its kind,
its credential's scopes, its role and the environments it reaches), never written by hand:
UNAUTHENTICATED, FORBIDDEN (with the scopes that would have allowed it), NOT_FOUND, or OK (the
rule let the call through: the operation answered, or refused its input as CONFLICT or
BAD_USER_INPUT). `viewer.can` must give the same answer for every root operation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from starlette.applications import Starlette

from keyplane.models import Member
from keyplane.models.base import new_id
from keyplane.permissions.rules import RULES, Reach, Rule
from keyplane.permissions.scopes import ROLE_SCOPES, Role, Scope
from keyplane.services import Services
from tests import factories
from tests.helpers import Api, OAuthIssuer, new_tenant
from tests.schema_client import Outcome, execute

OK, UA, FB, NF = "OK", "UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND"
RULE_CODES = {UA, FB, NF}
ALL = frozenset(Scope)
PASSWORD = factories.PASSWORD
# Derived, so that no literal looks like a secret to the scanner.
UNKNOWN_TOKEN = "fmi_" + hashlib.sha256(b"no invitation").hexdigest()[:32]


@dataclass(frozen=True)
class Caller:
    """What a caller is, as far as the rules care."""

    name: str
    kind: str  # anonymous, jwt, oauth or key
    token_scopes: frozenset[Scope] = frozenset()
    role: Role | None = None  # in project P
    reaches_e1: bool = False  # a member limited to E2 does not
    all_environments: bool = False
    key_in_p: bool = False  # a key of project P (always in E1 here) or of Q

    def held_in_e1(self) -> frozenset[Scope]:
        if self.kind == "key":
            return self.token_scopes
        assert self.role is not None
        return ROLE_SCOPES[self.role] & self.token_scopes

    def sees_p(self) -> bool:
        return self.key_in_p if self.kind == "key" else self.role is not None

    def held_across_p(self) -> frozenset[Scope]:
        if self.kind == "key":
            return self.token_scopes
        assert self.role is not None
        return ROLE_SCOPES[self.role] & self.token_scopes if self.all_environments else frozenset()


def _person(name: str, role: Role | None, *, only_e2: bool = False) -> Caller:
    return Caller(
        name,
        "jwt",
        ALL,
        role,
        reaches_e1=role is not None and not only_e2,
        all_environments=not only_e2,
    )


def _key(name: str, scopes: frozenset[Scope], *, in_p: bool = True) -> Caller:
    return Caller(name, "key", scopes, reaches_e1=in_p, key_in_p=in_p)


def _oauth(name: str, scopes: frozenset[Scope]) -> Caller:
    return Caller(name, "oauth", scopes, Role.OWNER, reaches_e1=True, all_environments=True)


CALLERS = [
    Caller("anonymous", "anonymous"),
    _person("owner", Role.OWNER),
    _person("admin", Role.ADMIN),
    _person("developer", Role.DEVELOPER),
    _person("viewer", Role.VIEWER),
    _person("admin-of-E2-only", Role.ADMIN, only_e2=True),
    _person("outsider", None),
    _oauth("oauth-owner-analytics", frozenset({Scope.VIEW_ANALYTICS})),
    _oauth("oauth-owner-manage", frozenset({Scope.MANAGE_PROJECT})),
    *[_key(f"key-{scope.value}", frozenset({scope})) for scope in Scope],
    _key("key-of-project-Q", ALL, in_p=False),
]


def expected(rule: Rule, caller: Caller) -> tuple[str, list[str]]:
    """The answer of the rule to the caller, and the scopes a FORBIDDEN names."""
    scopes = sorted(scope.value for scope in rule.scopes)
    if rule.reach is Reach.OPEN:
        return OK, []
    if caller.kind == "anonymous":
        return UA, []
    if rule.sessions_only and caller.kind != "jwt":
        return FB, []
    if rule.people_only and caller.kind == "key":
        return FB, []
    if rule.scopes and not rule.self_read and not caller.token_scopes & rule.any_of:
        return FB, scopes
    if rule.reach is Reach.TOKEN:
        return OK, []
    if rule.reach is Reach.PROJECT:
        if not caller.sees_p():
            return NF, []
        held = caller.held_across_p()
    else:
        if not caller.reaches_e1:
            return NF, []
        held = caller.held_in_e1()
    if rule.scopes and not held & rule.any_of:
        return FB, scopes
    return OK, []


# Nested fields are reached through a root field, whose rule answers first.
PARENT = {
    "Environment.apiKeys": "Query.environment",
    "Environment.usage": "Query.environment",
    "ApiKey.usage": "Query.apiKey",
    "ApiKey.rotatedFrom": "Query.apiKey",
    "Environment.keysOutsidePolicy": "Query.environment",
    "ApiKey.replacedBy": "Query.apiKey",
}


# `node` and `nodes` answer each id as its typed lookup would (tests/test_node.py compares
# them type by type); here they fetch project P and must read as `project` does. `viewer.can`
# cannot judge them: it is not told the id.
READS_AS = {"Query.node": "Query.project", "Query.nodes": "Query.project"}


def expected_row(field_name: str, caller: Caller) -> tuple[str, list[str]]:
    if field_name in READS_AS:
        return expected_row(READS_AS[field_name], caller)
    parent = PARENT.get(field_name)
    if parent is not None:
        first = expected(RULES[parent], caller)
        if first[0] != OK:
            return first
    return expected(RULES[field_name], caller)


@dataclass
class World:
    app: Starlette
    oauth: OAuthIssuer
    owner_token: str
    owner_email: str
    project_id: str
    e1: str
    e2: str
    q_owner_token: str
    q_project_id: str
    q_environment: str
    key_in_e1: str = ""
    published_template: str = ""
    document: str = ""
    names: list[int] = field(default_factory=lambda: [0])
    caller_email: str | None = None

    def unique(self, stem: str) -> str:
        self.names[0] += 1
        return f"{stem}-{self.names[0]}"

    async def as_owner(self, document: str, variables: dict[str, Any]) -> Any:
        return (await execute(self.app, document, variables, credential=self.owner_token)).ok()

    async def fresh_key(self) -> str:
        issued = await factories.api_key(
            environment_id=self.e1, created_by_id=await self.owner_id(), name="target"
        )
        return issued.id

    async def owner_id(self) -> str:
        member = await Member.filter(project_id=self.project_id, role=Role.OWNER).first()
        assert member is not None
        return str(member.user_id)  # type: ignore[attr-defined]

    async def fresh_template(self) -> str:
        row = await factories.template(environment_id=self.e1, created_by_id=await self.owner_id())
        return row.id

    async def fresh_member(self) -> str:
        person = await factories.user()
        row = await factories.member(
            project_id=self.project_id,
            user_id=person.id,
            role=Role.DEVELOPER,
            environment_ids=[self.e1],
        )
        return row.id


async def build_world(app: Starlette, oauth: OAuthIssuer) -> World:
    owner = await factories.tenant(app, environments=("E1", "E2"))
    other = await factories.tenant(app)
    world = World(
        app=app,
        oauth=oauth,
        owner_token=owner.token,
        owner_email=owner.email,
        project_id=owner.project_id,
        e1=owner.environment_ids[0],
        e2=owner.environment_ids[1],
        q_owner_token=other.token,
        q_project_id=other.project_id,
        q_environment=other.environment_id,
    )
    world.key_in_e1 = await world.fresh_key()
    created = await world.as_owner(
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id } }",
        {
            "i": {
                "environmentId": world.e1,
                "name": "letter",
                "content": "Hi {{ name }}",
                "format": "TEXT",
            }
        },
    )
    world.published_template = created["createTemplate"]["id"]
    await world.as_owner(
        "mutation($id: ID!) { publishTemplate(id: $id) { id } }", {"id": world.published_template}
    )
    generated = await world.as_owner(
        "mutation($i: GenerateDocumentInput!) { generateDocument(input: $i) { id } }",
        {"i": {"templateId": world.published_template, "data": {"name": "Ada"}}},
    )
    world.document = generated["generateDocument"]["id"]
    return world


async def credential_of(world: World, caller: Caller) -> str | None:
    services: Services = world.app.state.services
    if caller.kind == "anonymous":
        return None
    if caller.kind == "oauth":
        world.caller_email = world.owner_email
        names = {Scope.VIEW_ANALYTICS: "analytics:view", Scope.MANAGE_PROJECT: "project:manage"}
        scope = " ".join(names[s] for s in caller.token_scopes)
        return world.oauth.token(
            sub=f"{caller.name}-at-issuer", email=world.owner_email, scope=scope
        )
    if caller.kind == "key":
        environment = world.e1 if caller.key_in_p else world.q_environment
        project = world.project_id if caller.key_in_p else world.q_project_id
        creator = await Member.filter(project_id=project, role=Role.OWNER).first()
        assert creator is not None
        issued = await factories.api_key(
            environment_id=environment,
            created_by_id=str(creator.user_id),  # type: ignore[attr-defined]
            scopes=sorted(caller.token_scopes),
            name=caller.name,
        )
        return issued.secret
    if caller.role is Role.OWNER:
        world.caller_email = world.owner_email
        return world.owner_token
    person = await factories.user()
    world.caller_email = person.email
    if caller.role is not None:
        await factories.member(
            project_id=world.project_id,
            user_id=person.id,
            role=caller.role,
            environment_ids=[world.e2] if not caller.all_environments else None,
        )
    return await factories.session_token(
        person.id, jwt_secret=str(services.settings.jwt_secret), now=services.clock()
    )


Variables = Callable[[World], Awaitable[dict[str, Any]]]
SPAN = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}


async def nothing(world: World) -> dict[str, Any]:
    return {}


async def in_e1(world: World) -> dict[str, Any]:
    return {"e": world.e1}


async def in_p(world: World) -> dict[str, Any]:
    return {"p": world.project_id}


async def key_in_e1(world: World) -> dict[str, Any]:
    return {"id": world.key_in_e1}


async def fresh_key(world: World) -> dict[str, Any]:
    return {"id": await world.fresh_key()}


async def fresh_template(world: World) -> dict[str, Any]:
    return {"id": await world.fresh_template()}


async def invitation(world: World) -> dict[str, Any]:
    """An invitation to project Q for the caller's email (every caller is a stranger to Q)."""
    if world.caller_email is None:
        return {"token": UNKNOWN_TOKEN}
    answer = await execute(
        world.app,
        "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { token } }",
        {"i": {"projectId": world.q_project_id, "email": world.caller_email, "role": "VIEWER"}},
        credential=world.q_owner_token,
    )
    return {"token": answer.ok()["inviteMember"]["token"]}


def _input(build: Callable[[World], dict[str, Any] | Awaitable[dict[str, Any]]]) -> Variables:
    async def variables(world: World) -> dict[str, Any]:
        value = build(world)
        if not isinstance(value, dict):
            value = await value
        return {"i": value}

    return variables


async def _update_key(world: World) -> dict[str, Any]:
    return {"id": await world.fresh_key(), "name": "renamed"}


async def _rotate_key(world: World) -> dict[str, Any]:
    return {"id": await world.fresh_key()}


async def _update_template(world: World) -> dict[str, Any]:
    return {"id": await world.fresh_template(), "name": world.unique("tpl")}


async def _update_member(world: World) -> dict[str, Any]:
    return {"memberId": await world.fresh_member(), "role": "VIEWER"}


async def fresh_member(world: World) -> dict[str, Any]:
    return {"id": await world.fresh_member()}


# One document per guarded field: (GraphQL document, its variables).
OPERATIONS: dict[str, tuple[str, Variables]] = {
    "Query.viewer": ("{ viewer { kind } }", nothing),
    "Query.projects": ("{ projects { id } }", nothing),
    "Query.project": ("query($p: ID!) { project(id: $p) { id } }", in_p),
    "Query.node": ("query($p: ID!) { node(id: $p) { id } }", in_p),
    "Query.nodes": ("query($p: ID!) { nodes(ids: [$p]) { id } }", in_p),
    "Query.environment": ("query($e: ID!) { environment(id: $e) { id } }", in_e1),
    "Query.apiKey": ("query($id: ID!) { apiKey(id: $id) { id } }", key_in_e1),
    "Query.activity": (
        "query($e: ID!) { activity(environmentId: $e) { edges { cursor } } }",
        in_e1,
    ),
    "Query.members": ("query($p: ID!) { members(projectId: $p) { id } }", in_p),
    "Query.templates": (
        "query($e: ID!) { templates(environmentId: $e) { edges { cursor } } }",
        in_e1,
    ),
    "Query.template": (
        "query($id: ID!) { template(id: $id) { id } }",
        lambda w: _const({"id": w.published_template}),
    ),
    "Query.documents": (
        "query($e: ID!) { documents(environmentId: $e) { edges { cursor } } }",
        in_e1,
    ),
    "Query.document": (
        "query($id: ID!) { document(id: $id) { id } }",
        lambda w: _const({"id": w.document}),
    ),
    "Query.analytics": (
        "query($e: ID!, $from: DateTime!, $to: DateTime!) "
        "{ analytics(environmentId: $e, from: $from, to: $to) { environmentId } }",
        lambda w: _const({"e": w.e1, **SPAN}),
    ),
    "Mutation.signUp": (
        "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
        _input(
            lambda w: {"email": w.unique("new") + "@example.com", "password": PASSWORD, "name": "N"}
        ),
    ),
    "Mutation.logIn": (
        "mutation($i: LogInInput!) { logIn(input: $i) { accessToken } }",
        _input(lambda w: {"email": w.owner_email, "password": PASSWORD}),
    ),
    "Mutation.createProject": (
        "mutation($i: CreateProjectInput!) { createProject(input: $i) { id } }",
        _input(lambda w: {"name": w.unique("project")}),
    ),
    "Mutation.createEnvironment": (
        "mutation($i: CreateEnvironmentInput!) { createEnvironment(input: $i) { id } }",
        _input(lambda w: {"projectId": w.project_id, "name": w.unique("env")}),
    ),
    "Mutation.createApiKey": (
        "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }",
        _input(lambda w: {"environmentId": w.e1, "name": "new", "scopes": ["MANAGE_PROJECT"]}),
    ),
    "Mutation.updateApiKey": (
        "mutation($i: UpdateApiKeyInput!) { updateApiKey(input: $i) { id } }",
        _input(_update_key),
    ),
    "Mutation.revokeApiKey": ("mutation($id: ID!) { revokeApiKey(id: $id) { id } }", fresh_key),
    "Mutation.deleteApiKey": ("mutation($id: ID!) { deleteApiKey(id: $id) { id } }", fresh_key),
    "Mutation.rotateApiKey": (
        "mutation($i: RotateApiKeyInput!) { rotateApiKey(input: $i) { secret } }",
        _input(_rotate_key),
    ),
    "Mutation.inviteMember": (
        "mutation($i: InviteMemberInput!) { inviteMember(input: $i) { token } }",
        _input(
            lambda w: {
                "projectId": w.project_id,
                "email": w.unique("invitee") + "@example.com",
                "role": "VIEWER",
                "environmentIds": [w.e1],
            }
        ),
    ),
    "Mutation.acceptInvitation": (
        "mutation($token: String!) { acceptInvitation(token: $token) { id } }",
        invitation,
    ),
    "Mutation.updateMember": (
        "mutation($i: UpdateMemberInput!) { updateMember(input: $i) { id } }",
        _input(_update_member),
    ),
    "Mutation.removeMember": (
        "mutation($id: ID!) { removeMember(memberId: $id) { id } }",
        fresh_member,
    ),
    "Mutation.createTemplate": (
        "mutation($i: CreateTemplateInput!) { createTemplate(input: $i) { id } }",
        _input(
            lambda w: {
                "environmentId": w.e1,
                "name": w.unique("tpl"),
                "content": "Hi",
                "format": "TEXT",
            }
        ),
    ),
    "Mutation.updateTemplate": (
        "mutation($i: UpdateTemplateInput!) { updateTemplate(input: $i) { id } }",
        _input(_update_template),
    ),
    "Mutation.deleteTemplate": (
        "mutation($id: ID!) { deleteTemplate(id: $id) { id } }",
        fresh_template,
    ),
    "Mutation.publishTemplate": (
        "mutation($id: ID!) { publishTemplate(id: $id) { id } }",
        fresh_template,
    ),
    "Mutation.unpublishTemplate": (
        "mutation($id: ID!) { unpublishTemplate(id: $id) { id } }",
        fresh_template,
    ),
    "Mutation.generateDocument": (
        "mutation($i: GenerateDocumentInput!) { generateDocument(input: $i) { id } }",
        _input(lambda w: {"templateId": w.published_template, "data": {"name": "Bo"}}),
    ),
    "Mutation.generateReport": (
        "mutation($i: GenerateReportInput!) { generateReport(input: $i) { filename } }",
        _input(lambda w: {"environmentId": w.e1, "format": "CSV", **SPAN}),
    ),
    "Environment.apiKeys": (
        "query($e: ID!) { environment(id: $e) { apiKeys { edges { cursor } } } }",
        in_e1,
    ),
    "Environment.usage": (
        "query($e: ID!, $from: DateTime!, $to: DateTime!) "
        "{ environment(id: $e) { usage(from: $from, to: $to) { at } } }",
        lambda w: _const({"e": w.e1, **SPAN}),
    ),
    "ApiKey.usage": (
        "query($id: ID!, $from: DateTime!, $to: DateTime!) "
        "{ apiKey(id: $id) { usage(from: $from, to: $to) { at } } }",
        lambda w: _const({"id": w.key_in_e1, **SPAN}),
    ),
    "ApiKey.rotatedFrom": (
        "query($id: ID!) { apiKey(id: $id) { rotatedFrom { id } } }",
        key_in_e1,
    ),
    "ApiKey.replacedBy": (
        "query($id: ID!) { apiKey(id: $id) { replacedBy { id } } }",
        key_in_e1,
    ),
    "Query.scopeCatalog": ("{ scopeCatalog { name } }", nothing),
    "Mutation.updateEnvironmentPolicy": (
        "mutation($e: ID!) { updateEnvironmentPolicy(input: {environmentId: $e}) "
        "{ requireExpiry } }",
        in_e1,
    ),
    "Environment.keysOutsidePolicy": (
        "query($e: ID!) { environment(id: $e) { keysOutsidePolicy { id } } }",
        in_e1,
    ),
    # Last: it ends the session it is called with.
    "Mutation.logOut": ("mutation { logOut }", nothing),
}

CAN = """
query($operation: String!, $e: ID) {
  viewer { can(operation: $operation, environmentId: $e) { allowed reason requiredScopes } }
}
"""


async def _const(value: dict[str, Any]) -> dict[str, Any]:
    return value


def answer(outcome: Outcome) -> tuple[str, list[str]]:
    """The rule's answer as the caller sees it: the first error's code if the rule refused,
    else OK (the operation ran, or refused its input)."""
    for error in outcome.errors:
        assert not error["message"].startswith("Variable '$"), error  # a bad row, not a rule
        extensions = error.get("extensions", {})
        if extensions.get("code") in RULE_CODES:
            return extensions["code"], extensions.get("requiredScopes", [])
    return OK, []


async def visible_environments(world: World, credential: str | None) -> dict[str, list[str]]:
    """{project id: [environment ids]} as `projects` lists them to the caller."""
    outcome = await execute(
        world.app, "{ projects { id environments { id } } }", credential=credential
    )
    if outcome.data is None or outcome.data["projects"] is None:
        return {}
    return {
        project["id"]: sorted(e["id"] for e in project["environments"])
        for project in outcome.data["projects"]
    }


def expected_environments(world: World, caller: Caller) -> dict[str, list[str]]:
    """Lists are filtered by reach exactly as single objects are."""
    if caller.kind == "anonymous" or (caller.kind != "key" and caller.role is None):
        return {}
    if caller.kind == "key":
        if caller.key_in_p:
            return {world.project_id: [world.e1]}
        return {world.q_project_id: [world.q_environment]}
    if not caller.all_environments:
        return {world.project_id: [world.e2]}
    return {world.project_id: sorted([world.e1, world.e2])}


# Rows whose target, out of reach, must answer exactly as an id that names nothing.
OUT_OF_REACH_LOOKS_MISSING = {
    "Query.environment": "env",
    "Query.apiKey": "key",
    "Query.template": "tpl",
    "Query.document": "doc",
}


async def assert_same_as_missing(world: World, name: str, credential: str | None) -> None:
    document, variables = OPERATIONS[name]
    real = await variables(world)
    missing = {key: new_id(OUT_OF_REACH_LOOKS_MISSING[name]) for key in real}
    first = await execute(world.app, document, real, credential=credential)
    second = await execute(world.app, document, missing, credential=credential)
    assert first == second, name


def test_every_guarded_field_has_a_row() -> None:
    assert set(OPERATIONS) == set(RULES)


@pytest.mark.parametrize("caller", CALLERS, ids=[c.name for c in CALLERS])
async def test_each_caller_gets_what_each_rule_says(
    app: Starlette, oauth_issuer: OAuthIssuer, caller: Caller
) -> None:
    # given
    world = await build_world(app, oauth_issuer)
    credential = await credential_of(world, caller)

    visible = await visible_environments(world, credential)
    for name in OUT_OF_REACH_LOOKS_MISSING:  # before logOut ends the caller's session
        if expected_row(name, caller)[0] == NF:
            await assert_same_as_missing(world, name, credential)

    # when
    answers: dict[str, tuple[str, list[str]]] = {}
    decisions: dict[str, dict[str, Any]] = {}
    for field_name, (document, variables) in OPERATIONS.items():
        if field_name.startswith(("Query.", "Mutation.")) and field_name not in READS_AS:
            asked = await execute(
                app,
                CAN,
                {"operation": RULES[field_name].name, "e": world.e1},
                credential=credential,
            )
            decisions[field_name] = asked.ok()["viewer"]["can"]
        outcome = await execute(app, document, await variables(world), credential=credential)
        answers[field_name] = answer(outcome)

    # then
    assert answers == {name: expected_row(name, caller) for name in OPERATIONS}
    assert visible == expected_environments(world, caller)
    for field_name, decision in decisions.items():
        code, required = answers[field_name]
        assert decision["allowed"] == (code == OK), field_name
        if code == OK:
            assert decision["reason"] is None, field_name
        else:
            assert decision["reason"].startswith(f"{code}: "), (field_name, decision)
            if code == FB:
                assert decision["requiredScopes"] == required, field_name


async def test_viewer_can_refuses_an_unknown_operation(app: Starlette) -> None:
    # when
    outcome = await execute(app, CAN, {"operation": "launchRockets", "e": new_id("env")})

    # then: only the answer is null, the rest of the viewer is kept
    assert outcome.data == {"viewer": {"can": None}}
    assert [e["extensions"] for e in outcome.errors] == [
        {"code": "BAD_USER_INPUT", "field": "operation"}
    ]


async def test_over_http_a_forbidden_names_the_scopes_and_the_reason(api: Api) -> None:
    # given
    tenant = await new_tenant(api)
    _, secret = await api.create_key(tenant.token, tenant.environment_id, ["VIEW_ANALYTICS"])

    # when
    result = await api.gql(
        "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) { secret } }",
        {"i": {"environmentId": tenant.environment_id, "name": "x", "scopes": ["VIEW_ANALYTICS"]}},
        token=secret,
    )

    # then
    assert result.status == 200
    assert [e["extensions"] for e in result.errors] == [
        {"code": "FORBIDDEN", "requiredScopes": ["MANAGE_PROJECT"], "reason": "MISSING_SCOPE"}
    ]
