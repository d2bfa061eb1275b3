"""API keys: issue, list, read, update, revoke, delete and rotate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from keyplane.access import Access
from keyplane.auth import api_key as key_format
from keyplane.auth.verified import VerifiedCredentials
from keyplane.errors import BadUserInput, Conflict, Forbidden
from keyplane.models import ApiKey
from keyplane.models.activity import ActivityKind
from keyplane.models.api_key import ApiKeyStatus
from keyplane.permissions.checks.allowed_origins import stored_origins
from keyplane.permissions.checks.environment_policy import Policy
from keyplane.permissions.checks.ip_allowlist import stored_cidrs
from keyplane.permissions.rules import Rule, rule
from keyplane.permissions.scopes import Scope, encode_scopes
from keyplane.ratelimit.tiers import MAX_KEY_LIMIT, MIN_KEY_LIMIT
from keyplane.records import KeyRecord
from keyplane.resolvers import idempotency, validate
from keyplane.resolvers.activity import record_event
from keyplane.resolvers.pagination import Page, decode_cursor, page_of
from keyplane.resolvers.policy import key_scope_names, policy_of, scope_names
from keyplane.usage.counters import Counters, KeyCounters

MAX_ROTATION_OVERLAP = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key together with its secret: the only moment the secret exists outside the caller.

    A replay (resolvers/idempotency.py) answers with the key an earlier call issued, and no
    secret: it was never stored."""

    api_key: ApiKey
    secret: str | None
    replayed: bool = False


async def _replayed(key_id: str) -> IssuedKey:
    key = await ApiKey.get_or_none(id=key_id)
    if key is None:
        raise idempotency.gone()
    return IssuedKey(api_key=key, secret=None, replayed=True)


def _made(issued: IssuedKey) -> str:
    return issued.api_key.id


def _no_escalation(wanted: frozenset[Scope], held: frozenset[Scope]) -> None:
    missing = wanted - held
    if missing:
        names = ", ".join(sorted(missing))
        raise Forbidden(
            f"You cannot grant scopes you do not hold here: {names}.", required_scopes=missing
        )


def _key_limit(value: int | None) -> int | None:
    if value is None:
        return None
    return validate.whole_range(
        value, low=MIN_KEY_LIMIT, high=MAX_KEY_LIMIT, field="rateLimitPerMinute"
    )


def _creator_id(access: Access) -> str:
    principal = access.require_authenticated()
    # A key acts for the user who created it, so every key has a human createdBy.
    assert principal.user_id is not None
    return principal.user_id


@dataclass(frozen=True, slots=True)
class Restrictions:
    """What a key's create or update input restricts beyond its scopes; None: leave as is
    (an update), or none (a create)."""

    allowed_cidrs: list[str] | None = None
    allowed_origins: list[str] | None = None
    extra_scopes: list[str] | None = None


def _stored_restrictions(
    given: Restrictions, *, access: Access, catalog: frozenset[str]
) -> dict[str, str]:
    """The given restrictions, checked, as the columns they change."""
    changes: dict[str, str] = {}
    if given.allowed_cidrs is not None:
        changes["allowed_cidrs"] = stored_cidrs(given.allowed_cidrs)
    if given.allowed_origins is not None:
        changes["allowed_origins"] = stored_origins(given.allowed_origins)
    if given.extra_scopes is not None:
        wanted = scope_names(given.extra_scopes, catalog=catalog, field="extraScopes")
        key = access.principal.key
        if key is not None:  # a key grants no extra scope it does not carry itself
            _no_escalation_of_names(wanted, key.restrictions.extra_scopes)
        changes["extra_scopes"] = ",".join(sorted(wanted))
    return changes


def _no_escalation_of_names(wanted: frozenset[str], held: frozenset[str]) -> None:
    missing = wanted - held
    if missing:
        names = ", ".join(sorted(missing))
        raise Forbidden(
            f"You cannot grant scopes you do not hold here: {names}.", required_scopes=missing
        )


async def _new_key(
    *,
    environment_id: str,
    project_id: str,
    name: str,
    scopes: frozenset[Scope],
    created_by_id: str,
    expires_at: datetime | None,
    rate_limit_per_minute: int | None,
    rotated_from_id: str | None = None,
    restrictions: dict[str, str],
) -> IssuedKey:
    secret = key_format.generate_secret()
    key = await ApiKey.create(
        environment_id=environment_id,
        project_id=project_id,
        name=name,
        prefix=key_format.display_prefix(secret),
        secret_hash=key_format.hash_secret(secret),
        scopes=encode_scopes(scopes),
        created_by_id=created_by_id,
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
        rotated_from_id=rotated_from_id,
        allowed_cidrs=restrictions.get("allowed_cidrs", ""),
        allowed_origins=restrictions.get("allowed_origins", ""),
        extra_scopes=restrictions.get("extra_scopes", ""),
    )
    return IssuedKey(api_key=key, secret=secret)


async def create_api_key(
    access: Access,
    *,
    environment_id: str,
    name: str,
    scopes: list[Scope],
    expires_at: datetime | None,
    now: datetime,
    rate_limit_per_minute: int | None = None,
    restrictions: Restrictions = Restrictions(),
    catalog: frozenset[str] = frozenset(),
    credentials: VerifiedCredentials,
    idempotency_key: str | None = None,
) -> IssuedKey:
    environment, held = await access.require(
        rule("Mutation.createApiKey"), environment_id=environment_id
    )
    retry = idempotency.retry_of(
        access,
        "createApiKey",
        idempotency_key,
        environment_id=environment_id,
        name=name,
        scopes=sorted(set(scopes)),  # a set: the same scopes in another order are the same input
        expires_at=expires_at,
        rate_limit_per_minute=rate_limit_per_minute,
        allowed_cidrs=_as_set(restrictions.allowed_cidrs),
        allowed_origins=_as_set(restrictions.allowed_origins),
        extra_scopes=_as_set(restrictions.extra_scopes),
    )
    if (made := await idempotency.earlier(retry, now=now)) is not None:
        return await _replayed(made)
    name = validate.name(name)
    wanted = validate.scopes(scopes)
    limit = _key_limit(rate_limit_per_minute)
    expiry = (
        None
        if expires_at is None
        else validate.future_instant(expires_at, now=now, field="expiresAt")
    )
    _no_escalation(wanted, held)
    stored = _stored_restrictions(restrictions, access=access, catalog=catalog)
    policy = await policy_of(environment.id)
    policy.require(
        scopes=key_scope_names(encode_scopes(wanted), stored.get("extra_scopes", "")),
        issued_at=now,
        expires_at=expiry,
    )

    async def issue() -> IssuedKey:
        issued = await _new_key(
            environment_id=environment.id,
            project_id=environment.project_id,
            name=name,
            scopes=wanted,
            created_by_id=_creator_id(access),
            expires_at=expiry,
            rate_limit_per_minute=limit,
            restrictions=stored,
        )
        await _log(ActivityKind.KEY_CREATED, access, issued.api_key, now)
        return issued

    return await idempotency.once(
        retry, now=now, work=issue, made=_made, replay=_replayed, transaction=credentials.change
    )


def _as_set(values: list[str] | None) -> list[str] | None:
    """A list the key keeps as a set, as the idempotency fingerprint compares it."""
    return None if values is None else sorted(set(values))


def describe(key: ApiKey) -> str:
    """How the activity log names a key: id, displayable prefix and name, never the secret."""
    return f"key:{key.id} ({key.prefix}) {key.name}"


async def _log(kind: ActivityKind, access: Access, key: ApiKey, now: datetime) -> None:
    await record_event(
        kind,
        access=access,
        project_id=key.project_id,  # type: ignore[attr-defined]
        environment_id=key.environment_id,  # type: ignore[attr-defined]
        target=describe(key),
        at=now,
    )


async def _reachable_key(
    access: Access, key_id: str, key_rule: Rule
) -> tuple[ApiKey, frozenset[Scope]]:
    access.require_authenticated()
    return await access.reachable(await ApiKey.get_or_none(id=key_id), key_rule)


async def get_api_key(access: Access, *, key_id: str) -> ApiKey:
    """The key, if the caller may read it (its usage counters: usage/counters.py)."""
    key, _ = await _reachable_key(access, key_id, rule("Query.apiKey"))
    return key


async def rotated_from(access: Access, *, key_id: str) -> ApiKey | None:
    """The key this one replaced, if any and the caller may read it (as `get_api_key`)."""
    access.require_authenticated()
    found = await ApiKey.filter(replaced_by__id=key_id).first()
    return None if found is None else (await access.reachable(found, rule("ApiKey.rotatedFrom")))[0]


async def replaced_by(access: Access, *, key_id: str) -> ApiKey | None:
    """The key that replaced this one, if any and the caller may read it (as `get_api_key`)."""
    access.require_authenticated()
    found = await ApiKey.filter(rotated_from_id=key_id).first()
    return None if found is None else (await access.reachable(found, rule("ApiKey.replacedBy")))[0]


async def list_api_keys(
    access: Access,
    *,
    environment_id: str,
    project_id: str,
    first: int,
    after: str | None,
    status: ApiKeyStatus | None,
    now: datetime,
    counters: Counters,
) -> Page[tuple[KeyRecord, KeyCounters]]:
    """A page of keys, each with its usage counters (read with it: no second query)."""
    await access.require(rule("Environment.apiKeys"), environment_id=environment_id)
    first = validate.page_size(first)
    keys = await counters.page(
        lambda: access.lookups.key_page(
            environment_id,
            status=status,
            now=now,
            after=None if after is None else decode_cursor(after),
            limit=first + 1,
        )
    )
    return page_of(
        keys, first=first, after=after, count=lambda: _count(environment_id, status, now)
    )


async def _count(environment_id: str, status: ApiKeyStatus | None, now: datetime) -> int:
    """The keys `list_api_keys` pages through, counted (its query built only when asked)."""
    return await _listed(environment_id, status, now).count()


def _listed(environment_id: str, status: ApiKeyStatus | None, now: datetime) -> QuerySet[ApiKey]:
    """Every key `list_api_keys` pages through (as records.key_page filters them)."""
    query = ApiKey.filter(environment_id=environment_id)
    if status is ApiKeyStatus.REVOKED:
        return query.filter(revoked_at__isnull=False)
    if status is ApiKeyStatus.EXPIRED:
        return query.filter(revoked_at__isnull=True, expires_at__lte=now)
    if status is ApiKeyStatus.ACTIVE:
        return query.filter(
            Q(revoked_at__isnull=True), Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )
    return query


async def update_api_key(
    access: Access,
    *,
    key_id: str,
    name: str | None,
    scopes: list[Scope] | None,
    rate_limit_per_minute: int | None = None,
    clear_rate_limit: bool = False,
    restrictions: Restrictions = Restrictions(),
    catalog: frozenset[str] = frozenset(),
    now: datetime,
    credentials: VerifiedCredentials,
) -> ApiKey:
    key, held = await _reachable_key(access, key_id, rule("Mutation.updateApiKey"))
    changes: dict[str, str | int | None] = {}
    if rate_limit_per_minute is not None and clear_rate_limit:
        raise BadUserInput(
            "Give rateLimitPerMinute or clearRateLimit, not both.", field="clearRateLimit"
        )
    if rate_limit_per_minute is not None:
        changes["rate_limit_per_minute"] = _key_limit(rate_limit_per_minute)
    if clear_rate_limit:
        changes["rate_limit_per_minute"] = None
    if name is not None:
        changes["name"] = validate.name(name)
    if scopes is not None:
        wanted = validate.scopes(scopes)
        _no_escalation(wanted, held)
        changes["scopes"] = encode_scopes(wanted)
    changes.update(_stored_restrictions(restrictions, access=access, catalog=catalog))
    if "scopes" in changes or "extra_scopes" in changes:
        # Only the rule the update touches: renaming a key issued before the policy stays
        # possible (Environment.keysOutsidePolicy lists it).
        policy = await policy_of(key.environment_id)  # type: ignore[attr-defined]
        if policy.allowed_scopes:
            Policy(allowed_scopes=policy.allowed_scopes).require(
                scopes=key_scope_names(
                    str(changes.get("scopes", key.scopes)),
                    str(changes.get("extra_scopes", key.extra_scopes or "")),
                ),
                issued_at=key.created_at,
                expires_at=key.expires_at,
            )
    if changes:
        async with credentials.change():
            await ApiKey.filter(id=key.id).update(**changes)
            key.update_from_dict(changes)
            await _log(ActivityKind.KEY_UPDATED, access, key, now)
    return key


async def revoke_api_key(
    access: Access, *, key_id: str, now: datetime, credentials: VerifiedCredentials
) -> ApiKey:
    key, _ = await _reachable_key(access, key_id, rule("Mutation.revokeApiKey"))
    if key.revoked_at is None:
        async with credentials.change():
            changed = await ApiKey.filter(id=key.id, revoked_at__isnull=True).update(revoked_at=now)
            if changed:
                await _log(ActivityKind.KEY_REVOKED, access, key, now)
        key.revoked_at = now
    return key


async def delete_api_key(
    access: Access, *, key_id: str, now: datetime, credentials: VerifiedCredentials
) -> ApiKey:
    key, _ = await _reachable_key(access, key_id, rule("Mutation.deleteApiKey"))
    async with credentials.change():
        await ApiKey.filter(id=key.id).delete()
        await _log(ActivityKind.KEY_DELETED, access, key, now)
    return key


async def rotate_api_key(
    access: Access,
    *,
    key_id: str,
    expire_old_in_seconds: int,
    now: datetime,
    credentials: VerifiedCredentials,
    idempotency_key: str | None = None,
) -> IssuedKey:
    """Stripe-style roll: a new key with the same name, scopes and environment; the old one
    keeps working for `expire_old_in_seconds` (0 to 7 days) so deployments can switch over.

    The new key's lifetime is the old key's own, never the overlap: a key without an expiry
    is replaced by a key without one, and a key with an expiry by a key with the same lifetime
    (expiresAt - createdAt), counted from now. A key is replaced once (the new key's
    `rotated_from` is unique): rotating it again is a CONFLICT naming its replacement.
    """
    key, held = await _reachable_key(access, key_id, rule("Mutation.rotateApiKey"))
    retry = idempotency.retry_of(
        access,
        "rotateApiKey",
        idempotency_key,
        key_id=key_id,
        expire_old_in_seconds=expire_old_in_seconds,
    )
    if (made := await idempotency.earlier(retry, now=now)) is not None:
        return await _replayed(made)
    overlap = validate.whole_range(
        expire_old_in_seconds,
        low=0,
        high=int(MAX_ROTATION_OVERLAP.total_seconds()),
        field="expireOldInSeconds",
    )
    if key.revoked_at is not None:
        raise Conflict("A revoked key cannot be rotated.")
    await _not_replaced(key.id)
    if key.rotated_at is not None:
        # Its replacement was deleted (which clears the link): its expiry is the overlap now,
        # which must never become a new key's lifetime.
        raise Conflict(
            "This key was already rotated and its replacement was deleted; "
            "issue a new key with createApiKey."
        )
    _no_escalation(key.scope_set, held)
    # Before this rotation the key's expiry is its own: a rotation shortens it only once, as
    # the key is never rotated again.
    new_expiry = None if key.expires_at is None else _lifetime_from(key, now)
    old_expiry = now + timedelta(seconds=overlap)
    if key.expires_at is not None and key.expires_at < old_expiry:
        old_expiry = key.expires_at
    policy = await policy_of(key.environment_id)  # type: ignore[attr-defined]
    policy.require(
        scopes=key_scope_names(key.scopes, key.extra_scopes or ""),
        issued_at=now,
        expires_at=new_expiry,
    )

    async def roll() -> IssuedKey:
        issued = await _new_key(
            environment_id=key.environment_id,  # type: ignore[attr-defined]
            project_id=key.project_id,  # type: ignore[attr-defined]
            name=key.name,
            scopes=key.scope_set,
            created_by_id=_creator_id(access),
            expires_at=new_expiry,
            rate_limit_per_minute=key.rate_limit_per_minute,
            rotated_from_id=key.id,
            restrictions={
                "allowed_cidrs": key.allowed_cidrs or "",
                "allowed_origins": key.allowed_origins or "",
                "extra_scopes": key.extra_scopes or "",
            },
        )
        await ApiKey.filter(id=key.id).update(expires_at=old_expiry, rotated_at=now)
        await record_event(
            ActivityKind.KEY_ROTATED,
            access=access,
            project_id=key.project_id,  # type: ignore[attr-defined]
            environment_id=key.environment_id,  # type: ignore[attr-defined]
            target=f"{describe(key)} -> {issued.api_key.id} ({issued.api_key.prefix})",
            at=now,
        )
        return issued

    try:
        # One transaction: the old key's cached expiry is gone everywhere once it commits.
        return await idempotency.once(
            retry, now=now, work=roll, made=_made, replay=_replayed, transaction=credentials.change
        )
    except IntegrityError:
        # A concurrent rotation of the same key committed first (rotated_from is unique).
        await _not_replaced(key.id)
        raise


def _lifetime_from(key: ApiKey, now: datetime) -> datetime:
    assert key.expires_at is not None
    lifetime = max(key.expires_at - key.created_at, timedelta(seconds=1))
    try:
        return now + lifetime
    except OverflowError:
        # An expiry near year 9999 pushed past the last representable instant: stop there.
        return datetime.max.replace(tzinfo=UTC)


async def _not_replaced(key_id: str) -> None:
    replacements = await ApiKey.filter(rotated_from_id=key_id).values_list("id", flat=True)
    if replacements:
        replacement = str(replacements[0])
        raise Conflict(
            f"This key was already rotated: its replacement is {replacement}.",
            replacedBy=replacement,
        )
