"""Checks: rules beyond a field's scopes, which the people who deploy keyplane add as plugins.

A check is any object with a `name` and an async `__call__(request: CheckRequest) -> None`
that returns to allow and raises `keyplane.errors.Forbidden` (or `NotFound`) to refuse:

    class OfficeHours:
        name = "office_hours"
        about_request = False  # True: once per request, before any field runs
        scopes = {"documents:bulk": "Generate documents in bulk."}  # optional extra scopes

        async def __call__(self, request: CheckRequest) -> None:
            if request.field == "generateDocument" and request.headers.get("x-closed"):
                raise Forbidden("Documents are generated in office hours only.")

- `about_request = True` (the built-in IP and origin checks): the check runs once per HTTP
  request, after authentication and before any field; a refusal answers the whole request
  with HTTP 403 and the FORBIDDEN code.
- otherwise (the default): it runs on every guarded field, with `field` and `path` set,
  after the credential side of a root field's rule (kind, the credential's own scopes) and
  before the resolver looks up the target; a refusal is that field's FORBIDDEN (or
  NOT_FOUND) error.
- A check that raises anything else is logged and counted (`keyplane_check_failures_total`)
  and refuses as FORBIDDEN: a broken plugin never becomes a 500, nor lets a request through.
- `restricted_keys_only = True` (the built-in IP and origin checks) promises that the check
  allows every caller whose key has no restrictions (and every person), so that such a
  request skips it.
- `scopes` (name -> description) declares extra scope names that keys may carry
  (`extraScopes`), listed by `Query.scopeCatalog`; `request.restrictions.extra_scopes` holds
  those of the calling key.

Checks come from the entry-point group `keyplane.checks` and from `create_app(settings,
checks=[...])`. `KEYPLANE_CHECKS` (comma-separated names) selects and orders them; unset, the
built-in checks run with those given to `create_app`, so an installed plugin changes nothing
until it is named.

This package imports nothing of keyplane but `errors` and `permissions.scopes`: auth, records
and the HTTP layer depend on it, not the other way round.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from keyplane.errors import Forbidden, KeyplaneError, NotFound, ServiceUnavailable
from keyplane.permissions.scopes import Scope

if TYPE_CHECKING:
    from keyplane.auth.principal import Principal

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "keyplane.checks"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class KeyRestrictions:
    """What a key's row restricts beyond its scopes, parsed once per stored text."""

    allowed_cidrs: tuple[Network, ...] = ()
    allowed_origins: frozenset[str] = frozenset()
    extra_scopes: frozenset[str] = frozenset()


NO_RESTRICTIONS = KeyRestrictions()


def split_words(text: str) -> list[str]:
    """The stored form (comma-separated, as scopes are, no empty word) as a list."""
    return text.split(",") if text else []


@functools.lru_cache(maxsize=1024)
def parse_restrictions(cidrs: str, origins: str, extra_scopes: str) -> KeyRestrictions:
    """A key's stored restrictions as checks read them (cached: most keys share none)."""
    if not cidrs and not origins and not extra_scopes:
        return NO_RESTRICTIONS
    return KeyRestrictions(
        allowed_cidrs=tuple(ipaddress.ip_network(c, strict=False) for c in split_words(cidrs)),
        allowed_origins=frozenset(split_words(origins)),
        extra_scopes=frozenset(split_words(extra_scopes)),
    )


@dataclass(frozen=True, slots=True)
class CheckRequest:
    """What a check is asked about: who calls, what for, from where, with what restrictions."""

    principal: Principal
    # The operation's name (None when the document names none).
    operation: str | None
    # The guarded field being admitted (`generateDocument`, `apiKeys`...) and its path in the
    # answer; None and () for a check about the request itself.
    field: str | None
    path: tuple[str | int, ...]
    # The target's environment and project, when known: from the field's arguments, or the
    # calling key's own.
    environment_id: str | None
    project_id: str | None
    # The client's address (the right-most untrusted hop behind KEYPLANE_TRUSTED_PROXIES).
    client_ip: str
    headers: Mapping[str, str]
    # The calling key's restrictions (NO_RESTRICTIONS for people).
    restrictions: KeyRestrictions = NO_RESTRICTIONS
    # The field's arguments as given (empty for a check about the request).
    arguments: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def origin(self) -> str | None:
        """The request's `Origin` header, if it sent one."""
        return self.headers.get("origin")


@runtime_checkable
class Check(Protocol):
    """A rule a request must pass; see the module docstring. Optional attributes:
    `about_request: bool` (default False) and `scopes: Mapping[str, str]` (default none)."""

    @property
    def name(self) -> str: ...

    async def __call__(self, request: CheckRequest) -> None: ...


def about_request(check: Check) -> bool:
    return bool(getattr(check, "about_request", False))


def declared_scopes(check: Check) -> Mapping[str, str]:
    scopes: Mapping[str, str] = getattr(check, "scopes", None) or {}
    return scopes


class UnknownCheck(ValueError):
    """KEYPLANE_CHECKS names a check that is neither built in, installed nor given."""


def built_in_checks() -> list[Check]:
    from keyplane.permissions.checks.allowed_origins import AllowedOrigins
    from keyplane.permissions.checks.ip_allowlist import IpAllowlist

    return [IpAllowlist(), AllowedOrigins()]


def installed_checks() -> dict[str, Any]:
    """The entry points of the `keyplane.checks` group, by name, not loaded yet."""
    return {point.name: point for point in entry_points(group=ENTRY_POINT_GROUP)}


def _loaded(point: Any) -> Check:
    found = point.load()
    check: Check = found() if isinstance(found, type) else found
    return check


def select_checks(names: Sequence[str] | None, given: Iterable[Check] = ()) -> list[Check]:
    """The checks to run, in order: those named (built in, given to create_app, or installed
    under the `keyplane.checks` entry points), or with no names the built-in and given ones."""
    available: dict[str, Check] = {check.name: check for check in built_in_checks()}
    available.update((check.name, check) for check in given)
    if names is None:
        return list(available.values())
    installed = installed_checks()
    chosen: list[Check] = []
    for name in names:
        if name in available:
            chosen.append(available[name])
        elif name in installed:
            check = _loaded(installed[name])
            if check.name != name:
                raise UnknownCheck(f"the entry point {name!r} loads a check named {check.name!r}")
            chosen.append(check)
        else:
            raise UnknownCheck(f"KEYPLANE_CHECKS names {name!r}, which is not installed")
    return chosen


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    name: str
    description: str
    built_in: bool


BUILT_IN_SCOPE_DESCRIPTIONS: Mapping[Scope, str] = {
    Scope.GENERATE_DOCUMENTS: "Render published templates into documents.",
    Scope.MANAGE_TEMPLATES: "Create, edit, publish and delete templates.",
    Scope.VIEW_ANALYTICS: "Read usage, analytics, keys and the activity log.",
    Scope.MANAGE_PROJECT: "Manage keys, members, environments and their policies.",
}


class Checks:
    """The selected checks of one app, split by when they run, and the scope catalog."""

    def __init__(self, checks: Sequence[Check], *, failures: Counter[str] | None = None) -> None:
        self.all = tuple(checks)
        self.request_checks = tuple(c for c in checks if about_request(c))
        self.field_checks = tuple(c for c in checks if not about_request(c))
        # Every request check says it does nothing for a caller without key restrictions (the
        # built-in ones): the view then skips them for such callers, the most common.
        self.request_checks_need_restrictions = all(
            getattr(c, "restricted_keys_only", False) for c in self.request_checks
        )
        # Checks that raised something other than Forbidden or NotFound, by name (/metrics).
        self.failures: Counter[str] = Counter() if failures is None else failures
        catalog = [
            ScopeInfo(scope.value, BUILT_IN_SCOPE_DESCRIPTIONS[scope], True) for scope in Scope
        ]
        extra: dict[str, str] = {}
        for check in checks:
            for name, description in declared_scopes(check).items():
                if name in Scope.__members__ or name in extra:
                    raise ValueError(f"the check {check.name!r} declares {name!r} again")
                extra[name] = description
        catalog.extend(ScopeInfo(name, text, False) for name, text in sorted(extra.items()))
        self.catalog = tuple(catalog)
        self.extra_scopes = frozenset(extra)

    async def run(self, checks: Sequence[Check], request: CheckRequest) -> None:
        """Run `checks` in order; the first refusal stands."""
        for check in checks:
            try:
                await check(request)
            except (Forbidden, NotFound, ServiceUnavailable):
                raise  # a refusal, or the database is down (503), as anywhere else
            except Exception as exc:
                # A refusal of another kind, or a bug in a plugin: refuse, never answer 500.
                self.failures[check.name] += 1
                if not isinstance(exc, KeyplaneError):
                    logger.exception("the check %r failed; refusing the request", check.name)
                raise Forbidden("A permission check failed; the request was refused.") from exc
