"""Who may do what: one frozen Rule per root field and per scoped nested field.

A rule says which scopes allow the field (any one of them), what it reaches (the token alone,
a project or an environment), whether only people (a dashboard session or an OAuth token) may
call it, and whether a key may read itself through it. The root field's permission extension
and the "Needs ..." sentence of its description are derived from its rule
(`schema/permissions.py`); the resolvers ask `Access.require(rule, ...)` and
`Access.reachable(row, rule)` (`access.py`), and `viewer.can` answers from the same rule.
Nothing here reads the database or the principal: a rule is data.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from keyplane.permissions.scopes import Scope


class Reach(StrEnum):
    """What a field acts on, so what the caller must reach."""

    OPEN = "open"  # nothing: anyone may call it, anonymous callers included
    TOKEN = "token"  # the credential alone (or objects the resolver filters by reach)
    PROJECT = "project"  # a project: its scopes across every environment
    ENVIRONMENT = "environment"  # one environment: the scopes held there


@dataclass(frozen=True, slots=True)
class Rule:
    field: str  # "Query.apiKey", "Mutation.createApiKey", "Environment.apiKeys"
    scopes: tuple[Scope, ...] = ()  # any one of them allows it; () for no scope
    reach: Reach = Reach.ENVIRONMENT
    people_only: bool = False  # a dashboard session or an OAuth token, never an API key
    sessions_only: bool = False  # a dashboard session only (logOut)
    self_read: bool = False  # a key may read itself whatever its scopes
    note: str = ""  # what the rule cannot say, added to the description

    @property
    def name(self) -> str:
        """The field's GraphQL name: `apiKey` for "Query.apiKey"."""
        return self.field.partition(".")[2]

    @property
    def any_of(self) -> frozenset[Scope]:
        return frozenset(self.scopes)

    def admitting(self, held: frozenset[Scope]) -> Scope | None:
        """The scope, among those held, that admits the call: the first the rule lists."""
        for scope in self.scopes:
            if scope in held:
                return scope
        return None

    def needs(self) -> str:
        """The sentence that ends the field's description."""
        if self.reach is Reach.OPEN:
            return "Open to anyone."
        who = (
            "a dashboard session"
            if self.sessions_only
            else "a signed-in person (not an API key)"
            if self.people_only
            else "any credential"
        )
        if not self.scopes:
            reach = {
                Reach.TOKEN: "",
                Reach.PROJECT: " that sees the project",
                Reach.ENVIRONMENT: " that reaches the environment",
            }[self.reach]
            sentence = f"Needs {who}{reach}."
        else:
            names = " or ".join(self.scopes)
            where = {
                Reach.TOKEN: "",
                Reach.PROJECT: " across the project",
                Reach.ENVIRONMENT: " in the environment",
            }[self.reach]
            sentence = f"Needs {names}{where}"
            sentence += f", from {who}." if who != "any credential" else "."
        if self.self_read:
            sentence += " A key may always read itself."
        if self.note:
            sentence += f" {self.note}"
        return sentence


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {rule.field: rule for rule in rules}


MANAGE_PROJECT = (Scope.MANAGE_PROJECT,)
READ_KEYS = (Scope.MANAGE_PROJECT, Scope.VIEW_ANALYTICS)
READ_TEMPLATES = (Scope.MANAGE_TEMPLATES, Scope.GENERATE_DOCUMENTS)
READ_DOCUMENTS = (Scope.GENERATE_DOCUMENTS, Scope.VIEW_ANALYTICS)
MANAGE_TEMPLATES = (Scope.MANAGE_TEMPLATES,)
MEMBERS_NOTE = "A MANAGE_PROJECT key: only members limited to its own environment."
NODE_NOTE = "Then each id answers as its typed lookup would, with that lookup's own rule."

RULES: dict[str, Rule] = _rules(
    # Query
    Rule("Query.viewer", reach=Reach.OPEN),
    Rule("Query.projects", reach=Reach.TOKEN),
    Rule("Query.project", reach=Reach.PROJECT),
    Rule("Query.environment"),
    Rule("Query.apiKey", READ_KEYS, self_read=True),
    Rule("Query.activity", READ_KEYS),
    Rule("Query.members", MANAGE_PROJECT, Reach.PROJECT, note=MEMBERS_NOTE),
    Rule("Query.templates", READ_TEMPLATES),
    Rule("Query.template", READ_TEMPLATES),
    Rule("Query.documents", READ_DOCUMENTS),
    Rule("Query.document", READ_DOCUMENTS),
    Rule("Query.analytics", (Scope.VIEW_ANALYTICS,)),
    Rule("Query.node", reach=Reach.TOKEN, note=NODE_NOTE),
    Rule("Query.scopeCatalog", reach=Reach.OPEN),
    Rule("Query.nodes", reach=Reach.OPEN, note=NODE_NOTE),
    # Mutation
    Rule("Mutation.signUp", reach=Reach.OPEN),
    Rule("Mutation.logIn", reach=Reach.OPEN),
    Rule("Mutation.logOut", reach=Reach.TOKEN, people_only=True, sessions_only=True),
    Rule("Mutation.createProject", MANAGE_PROJECT, Reach.TOKEN, people_only=True),
    Rule("Mutation.createEnvironment", MANAGE_PROJECT, Reach.PROJECT, people_only=True),
    Rule("Mutation.createApiKey", MANAGE_PROJECT),
    Rule("Mutation.updateApiKey", MANAGE_PROJECT),
    Rule("Mutation.revokeApiKey", MANAGE_PROJECT),
    Rule("Mutation.deleteApiKey", MANAGE_PROJECT),
    Rule("Mutation.rotateApiKey", MANAGE_PROJECT),
    Rule("Mutation.inviteMember", MANAGE_PROJECT, Reach.PROJECT, note=MEMBERS_NOTE),
    Rule("Mutation.acceptInvitation", MANAGE_PROJECT, Reach.TOKEN, people_only=True),
    Rule("Mutation.updateMember", MANAGE_PROJECT, Reach.PROJECT, note=MEMBERS_NOTE),
    Rule("Mutation.removeMember", MANAGE_PROJECT, Reach.PROJECT, note=MEMBERS_NOTE),
    Rule("Mutation.createTemplate", MANAGE_TEMPLATES),
    Rule("Mutation.updateTemplate", MANAGE_TEMPLATES),
    Rule("Mutation.deleteTemplate", MANAGE_TEMPLATES),
    Rule("Mutation.publishTemplate", MANAGE_TEMPLATES),
    Rule("Mutation.unpublishTemplate", MANAGE_TEMPLATES),
    Rule("Mutation.generateDocument", (Scope.GENERATE_DOCUMENTS,)),
    Rule("Mutation.generateReport", (Scope.VIEW_ANALYTICS,)),
    Rule("Mutation.updateEnvironmentPolicy", MANAGE_PROJECT),
    # Scoped nested fields
    Rule("Environment.apiKeys", READ_KEYS),
    Rule("Environment.usage", READ_KEYS),
    Rule("Environment.keysOutsidePolicy", READ_KEYS),
    Rule("ApiKey.usage", READ_KEYS),
    Rule("ApiKey.rotatedFrom", READ_KEYS),
    Rule("ApiKey.replacedBy", READ_KEYS),
)

ROOT_TYPES = ("Query", "Mutation")


def rule(field: str) -> Rule:
    """The rule of "Type.field" (KeyError names a field that has none)."""
    return RULES[field]


def root_rule(operation: str) -> Rule | None:
    """The rule of a root field by its GraphQL name (`apiKey`, `createApiKey`), or None."""
    for type_name in ROOT_TYPES:
        found = RULES.get(f"{type_name}.{operation}")
        if found is not None:
            return found
    return None
