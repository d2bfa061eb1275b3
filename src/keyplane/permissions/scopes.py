"""The four scopes, the roles that grant them, and their OAuth spellings."""

from __future__ import annotations

import functools
from enum import StrEnum


class Scope(StrEnum):
    GENERATE_DOCUMENTS = "GENERATE_DOCUMENTS"
    MANAGE_TEMPLATES = "MANAGE_TEMPLATES"
    VIEW_ANALYTICS = "VIEW_ANALYTICS"
    MANAGE_PROJECT = "MANAGE_PROJECT"


class Role(StrEnum):
    OWNER = "OWNER"
    ADMIN = "ADMIN"
    DEVELOPER = "DEVELOPER"
    VIEWER = "VIEWER"


ALL_SCOPES: frozenset[Scope] = frozenset(Scope)

ROLE_SCOPES: dict[Role, frozenset[Scope]] = {
    Role.OWNER: ALL_SCOPES,
    Role.ADMIN: ALL_SCOPES,
    Role.DEVELOPER: frozenset(
        {Scope.GENERATE_DOCUMENTS, Scope.MANAGE_TEMPLATES, Scope.VIEW_ANALYTICS}
    ),
    Role.VIEWER: frozenset({Scope.VIEW_ANALYTICS}),
}

# Higher rank may grant lower or equal ranks (used by member management).
ROLE_RANK: dict[Role, int] = {Role.VIEWER: 0, Role.DEVELOPER: 1, Role.ADMIN: 2, Role.OWNER: 3}

OAUTH_SCOPES: dict[str, Scope] = {
    "documents:generate": Scope.GENERATE_DOCUMENTS,
    "templates:manage": Scope.MANAGE_TEMPLATES,
    "analytics:view": Scope.VIEW_ANALYTICS,
    "project:manage": Scope.MANAGE_PROJECT,
}


def parse_oauth_scope(claim: object) -> frozenset[Scope]:
    """Map an RFC 9068 `scope` claim (space-separated) to our scopes; unknown words are ignored."""
    if not isinstance(claim, str):
        return frozenset()
    return frozenset(OAUTH_SCOPES[word] for word in claim.split() if word in OAUTH_SCOPES)


def encode_scopes(scopes: frozenset[Scope] | set[Scope]) -> str:
    """The stored form: sorted names joined by commas."""
    return ",".join(sorted(scope.value for scope in scopes))


@functools.lru_cache(maxsize=64)
def decode_scopes(text: str) -> frozenset[Scope]:
    """The stored form back as scopes (cached: there are only 16 sets of four scopes)."""
    return frozenset(Scope(word) for word in text.split(",") if word)


@functools.lru_cache(maxsize=64)
def sorted_scopes(text: str) -> tuple[Scope, ...]:
    """The stored form as scopes in their fixed order, as the API lists them."""
    return tuple(sorted(decode_scopes(text)))
