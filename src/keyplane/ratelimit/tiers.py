"""The rate-limit tiers and their numbers: pure parsing, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache, lru_cache

from limits import RateLimitItem, parse
from limits.limits import safe_string


class Tier(StrEnum):
    API_KEY = "api_key"
    OAUTH = "oauth"
    JWT = "jwt"
    ANONYMOUS = "anonymous"


DEFAULT_TIERS = "api_key=100/minute;oauth=120/minute;jwt=200/minute;anonymous=30/minute"
MIN_KEY_LIMIT = 1
MAX_KEY_LIMIT = 10_000


@dataclass(frozen=True)
class Tiers:
    limits: dict[Tier, RateLimitItem]

    def __getitem__(self, tier: Tier) -> RateLimitItem:
        return self.limits[tier]


def parse_tiers(text: str, problems: list[str]) -> Tiers:
    """`api_key=100/minute;oauth=120/minute;...`: unnamed tiers keep their defaults."""
    chosen = {Tier(name): stable(parse(value)) for name, value in _pairs(DEFAULT_TIERS)}
    for name, value in _pairs(text):
        try:
            tier = Tier(name)
        except ValueError:
            problems.append(
                f"KEYPLANE_RATE_LIMITS: unknown tier {name!r} "
                f"(tiers: {', '.join(t.value for t in Tier)})"
            )
            continue
        try:
            item = parse(value)
        except ValueError:
            problems.append(f"KEYPLANE_RATE_LIMITS: {name}={value!r} is not like 100/minute")
            continue
        if item.amount < 1:
            problems.append(f"KEYPLANE_RATE_LIMITS: {name} must allow at least one request")
            continue
        chosen[tier] = stable(item)
    return Tiers(limits=chosen)


@lru_cache(maxsize=1024)
def per_minute(amount: int) -> RateLimitItem:
    return stable(parse(f"{amount}/minute"))


@cache
def _stable_class(cls: type[RateLimitItem]) -> type[RateLimitItem]:
    def key_for(self: RateLimitItem, *identifiers: bytes | str | int | float) -> str:
        parts = [safe_string(k) for k in identifiers]
        parts += [safe_string(self.multiples), self.GRANULARITY.name]
        return f"{self.namespace}/" + "/".join(parts)

    return type(f"Stable{cls.__name__}", (cls,), {"key_for": key_for, "__slots__": ()})


def stable(item: RateLimitItem) -> RateLimitItem:
    """The same limit, but its bucket's key leaves out the amount (limits puts it in), so a
    key whose own limit changes keeps counting what it already spent this minute."""
    return _stable_class(type(item))(item.amount, item.multiples, item.namespace)


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.replace(",", ";").split(";"):
        if part.strip():
            name, _, value = part.partition("=")
            pairs.append((name.strip().lower(), value.strip()))
    return pairs
