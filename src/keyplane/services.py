"""The long-lived collaborators of one running app, built from Settings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from keyplane.auth.authenticate import Authenticator
from keyplane.auth.changes import REDIS_KEY, RedisVersion, credential_version
from keyplane.auth.dashboard import utcnow
from keyplane.auth.oauth import AccessTokenVerifier, JwksCache
from keyplane.auth.passwords import Passwords
from keyplane.auth.verified import VerifiedCredentials
from keyplane.deadlines import Deadlines
from keyplane.metrics import Metrics
from keyplane.permissions.checks import Check, Checks, select_checks
from keyplane.ratelimit.limiter import Limiter
from keyplane.ratelimit.policy import RatePolicy
from keyplane.records import Lookups, RecordLoaders
from keyplane.render.pool import RenderPool
from keyplane.resolvers.user import UserPolicy
from keyplane.settings import Settings
from keyplane.usage.buffer import UsageBuffer
from keyplane.usage.counters import Counters


@dataclass(frozen=True)
class Services:
    settings: Settings
    authenticator: Authenticator
    credentials: VerifiedCredentials
    users: UserPolicy
    limiter: Limiter
    rates: RatePolicy
    usage: UsageBuffer
    renderer: RenderPool
    records: RecordLoaders
    counters: Counters
    deadlines: Deadlines
    clock: Callable[[], datetime]
    checks: Checks
    metrics: Metrics = field(default_factory=Metrics)


def build_services(
    settings: Settings,
    *,
    passwords: Passwords | None = None,
    jwks: JwksCache | None = None,
    clock: Callable[[], datetime] = utcnow,
    checks: Sequence[Check] = (),
) -> Services:
    metrics = Metrics()
    lookups = Lookups(settings.database_url)
    verifier = None
    if settings.oauth is not None:
        verifier = AccessTokenVerifier(settings.oauth, jwks or JwksCache(settings.oauth.jwks))
    secret = str(settings.jwt_secret)
    version = credential_version(settings.database_url, settings.rate_limit_storage)
    credentials = VerifiedCredentials(
        version,
        max_age=settings.credential_cache_seconds,
        max_entries=settings.credential_cache_size,
    )
    usage = UsageBuffer(
        settings.database_url,
        interval=settings.usage_flush_seconds,
        retention=timedelta(days=settings.usage_retention_days),
        activity_retention=timedelta(days=settings.activity_retention_days),
    )
    return Services(
        settings=settings,
        authenticator=Authenticator(
            jwt_secret=secret,
            oauth=verifier,
            lookups=lookups,
            credentials=credentials,
            clock=clock,
        ),
        credentials=credentials,
        users=UserPolicy(
            jwt_secret=secret,
            token_ttl=timedelta(seconds=settings.jwt_ttl_seconds),
            signup=settings.signup,
            passwords=passwords or Passwords(),
        ),
        # On Redis, the limiter's one round trip reads the credentials' version too.
        limiter=Limiter(
            settings.rate_limit_storage,
            fail_closed=settings.rate_limit_fail_closed,
            version=version if isinstance(version, RedisVersion) and credentials.enabled else None,
            version_key=REDIS_KEY,
        ),
        rates=RatePolicy(settings.rate_limits),
        usage=usage,
        renderer=RenderPool(settings.render),
        records=RecordLoaders(lookups),
        counters=Counters(lookups, usage),
        deadlines=Deadlines(settings.operation_timeout_seconds),
        clock=clock,
        checks=Checks(select_checks(settings.checks, checks), failures=metrics.check_failures),
        metrics=metrics,
    )
