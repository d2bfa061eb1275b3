"""The long-lived collaborators of one running app, built from Settings in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from keyplane.auth.authenticate import Authenticator
from keyplane.auth.dashboard import utcnow
from keyplane.auth.oauth import AccessTokenVerifier, JwksCache
from keyplane.auth.passwords import Passwords
from keyplane.resolvers.account import AccountPolicy
from keyplane.settings import Settings
from keyplane.usage.recorder import UsageRecorder


@dataclass(frozen=True)
class Services:
    settings: Settings
    authenticator: Authenticator
    accounts: AccountPolicy
    usage: UsageRecorder
    clock: Callable[[], datetime]


def build_services(
    settings: Settings,
    *,
    passwords: Passwords | None = None,
    jwks: JwksCache | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Services:
    verifier = None
    if settings.oauth is not None:
        verifier = AccessTokenVerifier(settings.oauth, jwks or JwksCache(settings.oauth.jwks))
    secret = str(settings.jwt_secret)
    return Services(
        settings=settings,
        authenticator=Authenticator(jwt_secret=secret, oauth=verifier, clock=clock),
        accounts=AccountPolicy(
            jwt_secret=secret,
            token_ttl=timedelta(seconds=settings.jwt_ttl_seconds),
            signup=settings.signup,
            passwords=passwords or Passwords(),
        ),
        usage=UsageRecorder(),
        clock=clock,
    )
