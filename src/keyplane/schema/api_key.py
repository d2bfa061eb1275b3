"""GraphQL types for API keys, their pages and the payloads that carry a secret once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from datetime import datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

import strawberry
from strawberry.relay import PageInfo

import keyplane.schema.enums  # noqa: F401  (registers enum descriptions first)
from keyplane import models
from keyplane.context import Context, Info
from keyplane.errors import NotFound
from keyplane.models.api_key import ApiKeyStatus, status_of
from keyplane.permissions.checks import split_words
from keyplane.permissions.scopes import Scope, sorted_scopes
from keyplane.ratelimit.tiers import Tier
from keyplane.records import EnvironmentRecord, KeyRecord, UserRecord
from keyplane.resolvers import api_key as api_key_resolvers
from keyplane.resolvers import usage as usage_resolvers
from keyplane.resolvers.api_key import IssuedKey
from keyplane.resolvers.pagination import Page, encode_cursor
from keyplane.resolvers.usage import Granularity
from keyplane.schema.idempotency import idempotency_key_field, replayed_field
from keyplane.schema.node import Node
from keyplane.schema.pagination import TOTAL_COUNT, page_info, total_count
from keyplane.schema.permissions import ruled
from keyplane.schema.usage import UsagePoint
from keyplane.schema.user import User
from keyplane.usage.counters import KeyCounters

if TYPE_CHECKING:
    from keyplane.schema.project import Environment

T = TypeVar("T")


class _WhenAsked(Generic[T]):
    """A counter of a key whose counters were not read with it: the counters DataLoader is
    asked only when graphql awaits the field, so a request that does not select it pays
    nothing (a coroutine made up front would have to be awaited or warn)."""

    __slots__ = ("_context", "_field", "_key_id")

    def __init__(self, context: Context, key_id: str, field: Callable[[KeyCounters], T]) -> None:
        self._context = context
        self._key_id = key_id
        self._field = field

    def __await__(self) -> Generator[Any, None, T]:
        return self._read().__await__()

    async def _read(self) -> T:
        return self._field(await self._context.loaders.counters.load(self._key_id))


def _last_used(counters: KeyCounters) -> datetime | None:
    return counters.last_used_at


def _total(counters: KeyCounters) -> int:
    return counters.total_requests


@strawberry.type(description="When a key last used one of its scopes.")
class ScopeUse:
    scope: Scope = strawberry.field(description="The scope.")
    last_used_at: datetime = strawberry.field(
        description="When it last admitted a field for the key (to the flush interval)."
    )


@strawberry.type(description="An API key. Its secret is never shown here, only its prefix.")
class ApiKey(Node):
    id: strawberry.ID = strawberry.field(description="Opaque key id (`key_...`), not the secret.")
    name: str = strawberry.field(description="What the key is for, 1 to 64 characters.")
    prefix: str = strawberry.field(
        description="The first characters of the secret (`fm_` + 8), to recognise it."
    )
    scopes: list[Scope] = strawberry.field(description="What the key may do in its environment.")
    status: ApiKeyStatus = strawberry.field(description="ACTIVE, REVOKED or EXPIRED, right now.")
    created_at: datetime = strawberry.field(description="When the key was issued.")
    expires_at: datetime | None = strawberry.field(description="When it stops working, if set.")
    revoked_at: datetime | None = strawberry.field(description="When it was revoked, if it was.")
    # The counters change with every request, so they are not part of the key as kept. A
    # page reads them with its keys (one query); else each is an awaitable that reads them
    # when asked for, every key of the request in one query (usage/counters.py). Plain
    # fields either way: graphql answers a plain field far cheaper than a resolver.
    last_used_at: datetime | Awaitable[datetime | None] | None = strawberry.field(
        graphql_type=datetime | None,
        description="When it last authenticated an admitted request.",
    )
    total_requests: int | Awaitable[int] = strawberry.field(
        graphql_type=int, description="Requests it has authenticated and the limiter admitted."
    )
    rate_limit_per_minute: int = strawberry.field(
        description="Requests per minute this key may make: its own limit if set, else the "
        "API-key tier's."
    )
    allowed_cidrs: list[str] = strawberry.field(
        description="The addresses (IPv4 and IPv6 CIDRs) it may be used from; empty: any."
    )
    allowed_origins: list[str] = strawberry.field(
        description="The browser origins it may be used from (requests without an Origin "
        "header are refused then); empty: any, and none needed."
    )
    extra_scopes: list[str] = strawberry.field(
        description="Scopes declared by installed checks (Query.scopeCatalog) that it carries."
    )
    # Plain fields, filled when the key is made (a page names each creator and environment
    # once): graphql answers a plain field far cheaper than a resolver, 40 times a page.
    environment: Annotated[Environment, strawberry.lazy("keyplane.schema.project")] = (
        strawberry.field(description="The environment the key belongs to.")
    )
    created_by: User = strawberry.field(
        description="The user who issued the key (for a key issued by another "
        "key: that key's creator)."
    )

    @strawberry.field(
        description="Which scopes the key has used, each with when it last admitted a field "
        "(the scope that allowed it, when several could)."
    )
    async def scopes_used(self, info: Info) -> list[ScopeUse]:
        used = await usage_resolvers.scopes_used(info.context.services.usage, key_id=self.id)
        return [ScopeUse(scope=scope, last_used_at=at) for scope, at in sorted(used.items())]

    @strawberry.field(
        description="The key's scopes it has not used in the last 30 days (a new key: all of "
        "them): candidates to remove, for least privilege."
    )
    async def unused_scopes(self, info: Info) -> list[Scope]:
        used = await usage_resolvers.scopes_used(info.context.services.usage, key_id=self.id)
        return usage_resolvers.unused_scopes(self.scopes, used, now=info.context.now)

    @strawberry.field(
        **ruled("ApiKey.usage", "Requests and refusals over time, in the key's environment.")
    )
    async def usage(
        self,
        info: Info,
        from_: Annotated[datetime, strawberry.argument(name="from", description="Start.")],
        to: Annotated[datetime, strawberry.argument(description="End (inclusive).")],
        granularity: Annotated[
            Granularity, strawberry.argument(description="Period of each point.")
        ] = Granularity.HOUR,
    ) -> list[UsagePoint] | None:
        points = await usage_resolvers.key_usage(
            info.context.access,
            info.context.services.usage,
            key_id=self.id,
            start=from_,
            end=to,
            granularity=granularity,
        )
        return [UsagePoint.from_point(p) for p in points]

    # Read only when selected: a page of keys that does not ask for them costs nothing more.
    @strawberry.field(
        **ruled("ApiKey.rotatedFrom", "The key this one replaced (rotateApiKey), if any.")
    )
    async def rotated_from(self, info: Info) -> ApiKey | None:
        found = await api_key_resolvers.rotated_from(info.context.access, key_id=self.id)
        return None if found is None else await ApiKey.load(found, context=info.context)

    @strawberry.field(
        **ruled(
            "ApiKey.replacedBy",
            "The key that replaced this one (rotateApiKey), if any; a key is replaced once.",
        )
    )
    async def replaced_by(self, info: Info) -> ApiKey | None:
        found = await api_key_resolvers.replaced_by(info.context.access, key_id=self.id)
        return None if found is None else await ApiKey.load(found, context=info.context)

    @classmethod
    def from_model(
        cls,
        key: models.ApiKey | KeyRecord,
        *,
        context: Context,
        environment: EnvironmentRecord,
        creator: UserRecord,
        creator_email: bool,
        counters: KeyCounters | None = None,
    ) -> ApiKey:
        """`creator_email`: whether the caller may read the creator's email (`Access`)."""
        limit = key.rate_limit_per_minute
        if limit is None:
            limit = int(context.services.settings.rate_limits[Tier.API_KEY].amount)
        return cls(
            id=strawberry.ID(key.id),
            name=key.name,
            prefix=key.prefix,
            scopes=list(sorted_scopes(key.scopes)),
            status=status_of(key, context.now),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
            rate_limit_per_minute=limit,
            allowed_cidrs=split_words(key.allowed_cidrs or ""),
            allowed_origins=split_words(key.allowed_origins or ""),
            extra_scopes=split_words(key.extra_scopes or ""),
            environment=_environment(environment),
            created_by=_user(creator, creator_email),
            last_used_at=(
                _WhenAsked(context, key.id, _last_used)
                if counters is None
                else counters.last_used_at
            ),
            total_requests=(
                _WhenAsked(context, key.id, _total) if counters is None else counters.total_requests
            ),
        )

    @classmethod
    def build(
        cls, key: models.ApiKey | KeyRecord, *, context: Context
    ) -> ApiKey | Awaitable[ApiKey]:
        """The key at once when this process holds its environment and creator (it keeps
        both once read); else an awaitable that reads them."""
        records = context.services.records
        environment = records.known_environment(key.environment_id)  # type: ignore[union-attr]
        creator = records.known_user(key.created_by_id)  # type: ignore[union-attr]
        if environment is not None and creator is not None:
            access = context.access
            emails = access.known_email_right(environment.id)
            if emails is not None:
                return cls.from_model(
                    key,
                    context=context,
                    environment=environment,
                    creator=creator,
                    creator_email=emails or access.owns(creator.id),
                )
        return cls.load(key, context=context)

    @classmethod
    async def load(cls, key: models.ApiKey | KeyRecord, *, context: Context) -> ApiKey:
        environment = await context.loaders.environment.load(key.environment_id)  # type: ignore[union-attr]
        creator = await context.loaders.user.load(key.created_by_id)  # type: ignore[union-attr]
        if environment is None or creator is None:
            raise NotFound()
        access = context.access
        emails = access.owns(creator.id) or await access.reads_emails(environment.id)
        return cls.from_model(
            key, context=context, environment=environment, creator=creator, creator_email=emails
        )


# Users and environments never change once created (records.py), and these GraphQL objects
# hold nothing else: one per record serves every key and every request that names it.
@lru_cache(maxsize=10_000)
def _environment(record: EnvironmentRecord) -> Environment:
    from keyplane.schema.project import Environment

    return Environment.from_model(record)


@lru_cache(maxsize=10_000)
def _user(record: UserRecord, email_visible: bool) -> User:
    return User.from_model(record, email_visible=email_visible)


@strawberry.type(description="One key in a page, with the cursor that points at it.")
class ApiKeyEdge:
    cursor: str = strawberry.field(description="Pass as `after` to continue after this key.")
    node: ApiKey = strawberry.field(description="The key.")


@strawberry.type(description="A page of API keys, newest first.")
class ApiKeyConnection:
    edges: list[ApiKeyEdge] = strawberry.field(description="The keys of this page.")
    page_info: PageInfo = strawberry.field(description="Where this page stands.")
    nodes: list[ApiKey] = strawberry.field(
        description="The keys of this page (the nodes of its edges)."
    )
    page: strawberry.Private[Page[Any]]

    @strawberry.field(description=TOTAL_COUNT)
    async def total_count(self) -> int:
        return await total_count(self.page)

    @classmethod
    def from_page(
        cls,
        page: Page[tuple[KeyRecord, KeyCounters]],
        *,
        context: Context,
        home: EnvironmentRecord,
        creators: dict[str, UserRecord],
        emails: bool,
    ) -> ApiKeyConnection:
        """`emails`: whether the caller reads emails in `home` (decided once for the page)."""
        edges = []
        owns = context.access.owns
        for key, key_counters in page.items:
            creator = creators.get(key.created_by_id)
            if creator is None:
                raise NotFound()
            node = ApiKey.from_model(
                key,
                context=context,
                environment=home,
                creator=creator,
                creator_email=emails or owns(creator.id),
                counters=key_counters,
            )
            edges.append(ApiKeyEdge(cursor=encode_cursor(key.created_at, key.id), node=node))
        return cls(
            edges=edges,
            page_info=page_info(page, [edge.cursor for edge in edges]),
            nodes=[edge.node for edge in edges],
            page=page,
        )


@strawberry.type(description="A newly issued key and its secret, shown this once only.")
class CreateApiKeyPayload:
    api_key: ApiKey = strawberry.field(description="The new key.")
    secret: str | None = strawberry.field(
        description="The secret (`fm_...`). Store it now: it cannot be shown again. Null when "
        "`replayed`."
    )
    replayed: bool = replayed_field()

    @classmethod
    async def from_issued(cls, issued: IssuedKey, *, context: Context) -> CreateApiKeyPayload:
        return cls(
            api_key=await ApiKey.load(issued.api_key, context=context),
            secret=issued.secret,
            replayed=issued.replayed,
        )


@strawberry.type(description="The replacement key and its secret, shown this once only.")
class RotateApiKeyPayload:
    api_key: ApiKey = strawberry.field(description="The new key that replaces the old one.")
    secret: str | None = strawberry.field(
        description="The new secret (`fm_...`). Store it now: it cannot be shown again. Null "
        "when `replayed`."
    )
    replayed: bool = replayed_field()

    @classmethod
    async def from_issued(cls, issued: IssuedKey, *, context: Context) -> RotateApiKeyPayload:
        return cls(
            api_key=await ApiKey.load(issued.api_key, context=context),
            secret=issued.secret,
            replayed=issued.replayed,
        )


@strawberry.input(description="Issue a key in an environment.")
class CreateApiKeyInput:
    environment_id: strawberry.ID = strawberry.field(description="The key's environment.")
    name: str = strawberry.field(description="What the key is for, 1 to 64 characters.")
    scopes: list[Scope] = strawberry.field(
        description="At least one; only scopes you hold in that environment."
    )
    expires_at: datetime | None = strawberry.field(
        default=None, description="A future instant, or null for a key that does not expire."
    )
    rate_limit_per_minute: int | None = strawberry.field(
        default=None,
        description="This key's own limit, 1 to 10000 requests a minute; null for the tier's.",
    )
    idempotency_key: str | None = idempotency_key_field()
    allowed_cidrs: list[str] | None = strawberry.field(
        default=None,
        description="Only from these addresses: IPv4 or IPv6 CIDRs (or addresses), at most 50.",
    )
    allowed_origins: list[str] | None = strawberry.field(
        default=None,
        description="Only from browsers on these origins (`https://host[:port]`), at most 50.",
    )
    extra_scopes: list[str] | None = strawberry.field(
        default=None, description="Scopes declared by installed checks (Query.scopeCatalog)."
    )


@strawberry.input(description="Rename a key or change its scopes; omitted fields stay.")
class UpdateApiKeyInput:
    id: strawberry.ID = strawberry.field(description="The key.")
    name: str | None = strawberry.field(default=None, description="New name.")
    scopes: list[Scope] | None = strawberry.field(
        default=None, description="New scopes: at least one, only scopes you hold."
    )
    rate_limit_per_minute: int | None = strawberry.field(
        default=None,
        description="This key's own limit, 1 to 10000 requests a minute (omit to keep it).",
    )
    clear_rate_limit: bool = strawberry.field(
        default=False, description="Drop the key's own limit and use the tier's again."
    )
    allowed_cidrs: list[str] | None = strawberry.field(
        default=None,
        description="New address restriction: CIDRs, at most 50; [] lifts it (omit to keep it).",
    )
    allowed_origins: list[str] | None = strawberry.field(
        default=None,
        description="New origin restriction, at most 50; [] lifts it (omit to keep it).",
    )
    extra_scopes: list[str] | None = strawberry.field(
        default=None, description="New extra scopes (Query.scopeCatalog); omit to keep them."
    )


@strawberry.input(description="Replace a key by a new one, expiring the old one later.")
class RotateApiKeyInput:
    id: strawberry.ID = strawberry.field(description="The key to replace.")
    expire_old_in_seconds: int = strawberry.field(
        default=0, description="How long the old key keeps working: 0 (now) to 604800 (7 days)."
    )
    idempotency_key: str | None = idempotency_key_field()
