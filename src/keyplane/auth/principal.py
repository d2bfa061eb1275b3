"""Who is calling: every credential kind becomes one Principal."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from keyplane.permissions.checks import NO_RESTRICTIONS, KeyRestrictions
from keyplane.permissions.scopes import ALL_SCOPES, Scope
from keyplane.records import KeyRecord


class AuthKind(StrEnum):
    API_KEY = "API_KEY"
    OAUTH = "OAUTH"
    JWT = "JWT"
    ANONYMOUS = "ANONYMOUS"


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What an authenticated API key is: where it lives and what it may do there."""

    key_id: str
    environment_id: str
    project_id: str
    scopes: frozenset[Scope]
    created_by_id: str
    rate_limit_per_minute: int | None = None
    # The key's row as read to authenticate this request (viewer.apiKey serves it as is).
    record: KeyRecord | None = None
    # Its restrictions beyond the scopes (IP, origins, extra scopes: permissions/checks/).
    restrictions: KeyRestrictions = NO_RESTRICTIONS


@dataclass(frozen=True, slots=True)
class OAuthClient:
    issuer: str
    subject: str
    client_id: str


@dataclass(frozen=True, slots=True)
class Principal:
    kind: AuthKind
    # The credential's own ceiling, before any role intersection: a key's scopes, an OAuth
    # token's `scope` claim, all four for a dashboard session, none for anonymous callers.
    token_scopes: frozenset[Scope] = frozenset()
    user_id: str | None = None
    key: KeyGrant | None = None
    session_id: str | None = None
    oauth: OAuthClient | None = None
    # The credentials' version this principal was trusted under, when the rate limiter's
    # round trip must still confirm it (auth/changes.py); None once confirmed or not needed.
    version: int | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.kind is not AuthKind.ANONYMOUS

    @property
    def is_user(self) -> bool:
        return self.user_id is not None and self.key is None


ANONYMOUS = Principal(kind=AuthKind.ANONYMOUS)


def dashboard_principal(user_id: str, session_id: str) -> Principal:
    return Principal(
        kind=AuthKind.JWT, token_scopes=ALL_SCOPES, user_id=user_id, session_id=session_id
    )
