"""Environment key policies: read, set, and the keys already outside one."""

from __future__ import annotations

from datetime import datetime

from keyplane.access import Access
from keyplane.errors import BadUserInput
from keyplane.models import ApiKey, EnvironmentPolicy
from keyplane.permissions.checks import split_words
from keyplane.permissions.checks.environment_policy import MAX_LIFETIME_DAYS, NO_POLICY, Policy
from keyplane.permissions.rules import rule
from keyplane.resolvers import validate


def key_scope_names(scopes: str, extra_scopes: str) -> frozenset[str]:
    """Every scope a key carries, built-in and extra, by name (as policies list them)."""
    return frozenset(split_words(scopes)) | frozenset(split_words(extra_scopes))


async def policy_of(environment_id: str) -> Policy:
    row = await EnvironmentPolicy.get_or_none(environment_id=environment_id)
    if row is None:
        return NO_POLICY
    return Policy(
        require_expiry=row.require_expiry,
        max_lifetime_days=row.max_lifetime_days,
        allowed_scopes=frozenset(split_words(row.allowed_scopes)),
    )


async def environment_policy(access: Access, *, environment_id: str) -> Policy:
    """The policy of an environment the caller reaches (any scope there)."""
    environment, _ = await access.environment(environment_id)
    return await policy_of(environment.id)


def scope_names(values: list[str], *, catalog: frozenset[str], field: str) -> frozenset[str]:
    """Scope names (built-in or declared by a check), each known to the catalog."""
    unknown = sorted({v for v in values if v not in catalog})
    if unknown:
        raise BadUserInput(
            f"Unknown scope {', '.join(unknown)}: Query.scopeCatalog lists them.", field=field
        )
    return frozenset(values)


async def update_environment_policy(
    access: Access,
    *,
    environment_id: str,
    require_expiry: bool,
    max_lifetime_days: int | None,
    allowed_scopes: list[str] | None,
    catalog: frozenset[str],
) -> Policy:
    environment, _ = await access.require(
        rule("Mutation.updateEnvironmentPolicy"), environment_id=environment_id
    )
    days = (
        None
        if max_lifetime_days is None
        else validate.whole_range(
            max_lifetime_days, low=1, high=MAX_LIFETIME_DAYS, field="maxLifetimeDays"
        )
    )
    allowed = scope_names(allowed_scopes or [], catalog=catalog, field="allowedScopes")
    await EnvironmentPolicy.update_or_create(
        environment_id=environment.id,
        defaults={
            "require_expiry": require_expiry,
            "max_lifetime_days": days,
            "allowed_scopes": ",".join(sorted(allowed)),
        },
    )
    return Policy(require_expiry=require_expiry, max_lifetime_days=days, allowed_scopes=allowed)


async def keys_outside_policy(
    access: Access, *, environment_id: str, project_id: str, now: datetime
) -> list[ApiKey]:
    """The environment's live keys (not revoked, not expired) that break its policy, newest
    first: issued before the policy, they keep working until someone acts."""
    await access.require(rule("Environment.keysOutsidePolicy"), environment_id=environment_id)
    policy = await policy_of(environment_id)
    if policy == NO_POLICY:
        return []
    keys = await ApiKey.filter(environment_id=environment_id, revoked_at__isnull=True).order_by(
        "-created_at", "-id"
    )
    return [
        key
        for key in keys
        if (key.expires_at is None or key.expires_at > now)
        and policy.violations(
            scopes=key_scope_names(key.scopes, key.extra_scopes or ""),
            issued_at=key.created_at,
            expires_at=key.expires_at,
        )
    ]
