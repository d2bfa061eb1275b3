"""The `viewer` type: who is calling, and with what."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from datetime import UTC, datetime
from typing import Annotated, Any, Generic, TypeVar

import strawberry

import keyplane.schema.enums  # noqa: F401  (registers enum descriptions first)
from keyplane.auth.principal import AuthKind
from keyplane.context import Context, Info
from keyplane.errors import BadUserInput, Forbidden, Unauthenticated
from keyplane.permissions.rules import root_rule
from keyplane.permissions.scopes import Scope
from keyplane.schema.api_key import ApiKey
from keyplane.schema.project import Environment
from keyplane.schema.user import User


@strawberry.type(description="The caller's rate limit, as this request left it.")
class RateLimit:
    limit: int = strawberry.field(description="Requests allowed per window.")
    remaining: int = strawberry.field(description="Requests left now (this one counted).")
    reset_at: datetime = strawberry.field(
        description="When the next request frees up in the moving window."
    )
    window_seconds: int = strawberry.field(description="The window's length in seconds.")
    tier: str = strawberry.field(
        description="The bucket: api_key, oauth, jwt or anonymous (per IP)."
    )


T = TypeVar("T")


class _WhenAsked(Generic[T]):
    """A value that needs a read: made only when graphql-core awaits the field, so a request
    that does not select it pays nothing (a coroutine made up front would warn unawaited)."""

    __slots__ = ("_read",)

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read

    def __await__(self) -> Generator[Any, None, T]:
        return self._read().__await__()


def _reads_email(context: Context) -> bool:
    """A person reads their own email; a key holder is not its creator, and reads the
    creator's email only with MANAGE_PROJECT in the key's environment."""
    key = context.principal.key
    if key is None:
        return True
    return bool(context.access.known_email_right(key.environment_id))


def viewer_user(info: Info) -> User | Awaitable[User | None] | None:
    """`viewer.user`: sync when this process already holds the user (no task per request);
    else an awaitable that graphql-core awaits."""
    return _viewer_user(info.context)


def _viewer_user(context: Context) -> User | Awaitable[User | None] | None:
    user_id = context.principal.user_id
    if user_id is None:
        return None
    known = context.services.records.known_user(user_id)
    if known is not None:
        return User.from_model(known, email_visible=_reads_email(context))
    return _WhenAsked(lambda: _load_user(context, user_id))


async def _load_user(context: Context, user_id: str) -> User | None:
    user = await context.loaders.user.load(user_id)
    return None if user is None else User.from_model(user, email_visible=_reads_email(context))


def _api_key(context: Context) -> ApiKey | Awaitable[ApiKey] | None:
    grant = context.principal.key
    if grant is None or grant.record is None:
        return None
    # The row authentication read (or kept) for this very request: no second query, unless
    # the counters are asked for (usage/counters.py).
    record = grant.record
    records = context.services.records
    if (
        records.known_environment(record.environment_id) is not None
        and records.known_user(record.created_by_id) is not None
        and context.access.known_email_right(record.environment_id) is not None
    ):
        return ApiKey.build(record, context=context)
    return _WhenAsked(lambda: ApiKey.load(record, context=context))


def _environment(context: Context) -> Environment | Awaitable[Environment | None] | None:
    grant = context.principal.key
    if grant is None:
        return None
    known = context.services.records.known_environment(grant.environment_id)
    if known is not None:
        return Environment.from_model(known)
    return _WhenAsked(lambda: _load_environment(context, grant.environment_id))


async def _load_environment(context: Context, environment_id: str) -> Environment | None:
    environment = await context.loaders.environment.load(environment_id)
    return None if environment is None else Environment.from_model(environment)


@strawberry.type(description="The caller of this request.")
class Viewer:
    kind: AuthKind = strawberry.field(description="How the caller authenticated.")
    scopes: list[Scope] = strawberry.field(
        description="What the credential may do: a key's scopes narrowed to what its creator's "
        "role grants now in the key's environment (none once the creator has left or lost "
        "that environment), an OAuth token's scope claim, all four for a dashboard session "
        "(roles narrow the last two per project)."
    )

    @strawberry.field(
        description="The caller's rate limit after this request (asking costs nothing extra)."
    )
    def rate_limit(self, info: Info) -> RateLimit | None:
        decision = info.context.rate_limit
        if decision is None:
            return None
        return RateLimit(
            limit=decision.bucket.amount,
            remaining=decision.remaining,
            reset_at=datetime.fromtimestamp(decision.reset_at, UTC),
            window_seconds=decision.bucket.window_seconds,
            tier=decision.bucket.tier.value,
        )

    # Plain fields, filled by `of` from what the request holds (an awaitable where a read is
    # needed): graphql answers a plain field far cheaper than a resolver, and `viewer` is on
    # most requests.
    user: User | Awaitable[User | None] | None = strawberry.field(
        graphql_type=User | None,
        description="The signed-in user, or the user who created the calling key.",
    )
    api_key: ApiKey | Awaitable[ApiKey] | None = strawberry.field(
        graphql_type=ApiKey | None,
        description="The calling API key, if a key authenticated this request.",
    )
    environment: Environment | Awaitable[Environment | None] | None = strawberry.field(
        graphql_type=Environment | None, description="The calling key's environment."
    )

    @classmethod
    def of(cls, context: Context) -> Viewer:
        return _AskedViewer(context)

    @strawberry.field(
        description="Whether the caller may call a root operation (`apiKey`, `createApiKey`...) "
        "in an environment, answered from the operation's rule without running it. Without "
        "`environmentId`, a key is asked about its own environment, anyone else about its "
        "credential's scopes alone. An unknown operation is BAD_USER_INPUT (and null)."
    )
    async def can(
        self,
        info: Info,
        operation: Annotated[
            str, strawberry.argument(description="A root field's name, such as `createApiKey`.")
        ],
        environment_id: Annotated[
            strawberry.ID | None, strawberry.argument(description="Where it would act.")
        ] = None,
    ) -> Decision | None:  # nullable: an unknown operation nulls this field, not the viewer
        rule = root_rule(operation)
        if rule is None:
            raise BadUserInput(f"No operation is named {operation!r}.", field="operation")
        refusal = await info.context.access.decide(
            rule, environment_id=None if environment_id is None else str(environment_id)
        )
        if refusal is None:
            return Decision(allowed=True, reason=None, required_scopes=[])
        if isinstance(refusal, Forbidden):
            required = refusal.required_scopes
        elif isinstance(refusal, Unauthenticated):
            required = list(rule.scopes)
        else:
            required = []  # out of reach: no scope would help
        return Decision(
            allowed=False,
            reason=f"{refusal.code}: {refusal.message}",
            required_scopes=[Scope(scope) for scope in required],
        )


class _AskedViewer(Viewer):
    """`Viewer` with each plain field made the first time graphql-core reads it (Strawberry's
    default resolver is `getattr`), so a request pays only for what it selects: making all
    five up front cost a keyed `{ viewer { kind apiKey { id } } }` about 4 % of its
    instructions (bench/instructions.py). Each is made once: every item of a batch shares
    this viewer (Context.viewer)."""

    # Not the dataclass's __init__: nothing is made up front.
    def __init__(self, context: Context) -> None:
        self._context = context

    @functools.cached_property
    def kind(self) -> AuthKind:  # type: ignore[override]
        return self._context.principal.kind

    @functools.cached_property
    def scopes(self) -> list[Scope]:  # type: ignore[override]
        return sorted(self._context.principal.token_scopes)

    @functools.cached_property
    def user(self) -> User | Awaitable[User | None] | None:  # type: ignore[override]
        return _viewer_user(self._context)

    @functools.cached_property
    def api_key(self) -> ApiKey | Awaitable[ApiKey] | None:  # type: ignore[override]
        return _api_key(self._context)

    @functools.cached_property
    def environment(self) -> Environment | Awaitable[Environment | None] | None:  # type: ignore[override]
        return _environment(self._context)


class RootValue:
    """The root value of every operation (schema/engine.py makes one from the context): it
    holds `Query.viewer`, a plain field, so that `viewer`, on most requests, is read with
    getattr instead of through Strawberry's resolver call (its Info, its arguments, its
    extension chain). Made once per request: every item of a batch shares the context."""

    __slots__ = ("_context",)

    def __init__(self, context: Context) -> None:
        self._context = context

    @property
    def viewer(self) -> Viewer:
        context = self._context
        viewer = context.viewer
        if viewer is None:
            viewer = context.viewer = Viewer.of(context)
        return viewer


@strawberry.type(description="What an operation's rule answers the caller (Viewer.can).")
class Decision:
    allowed: bool = strawberry.field(description="Whether the call would pass the rule.")
    reason: str | None = strawberry.field(
        description="Why not: the error code the call would get, a colon, and its message."
    )
    required_scopes: list[Scope] = strawberry.field(
        description="The scopes that would allow it (as FORBIDDEN's `requiredScopes`); empty "
        "when allowed, when only people may call it, or when the target is out of reach."
    )
