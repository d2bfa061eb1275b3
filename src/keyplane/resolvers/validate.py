"""Input checks shared by resolvers; each failure names the offending field."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from keyplane.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from keyplane.errors import BadUserInput
from keyplane.permissions.scopes import Scope

NAME_MAX = 64
EMAIL_MAX = 254
PAGE_MAX = 100
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def name(value: str, *, field: str = "name") -> str:
    text = value.strip()
    if not 1 <= len(text) <= NAME_MAX:
        raise BadUserInput(f"{field} must be 1 to {NAME_MAX} characters.", field=field)
    if any(ord(ch) < 32 for ch in text):
        raise BadUserInput(f"{field} must not contain control characters.", field=field)
    return text


def email(value: str, *, field: str = "email") -> str:
    text = value.strip().lower()
    if len(text) > EMAIL_MAX or not _EMAIL_RE.match(text):
        raise BadUserInput("email must be a valid email address.", field=field)
    return text


def password(value: str, *, field: str = "password") -> str:
    if not MIN_PASSWORD_LENGTH <= len(value) <= MAX_PASSWORD_LENGTH:
        raise BadUserInput(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
            field=field,
        )
    return value


def scopes(values: list[Scope], *, field: str = "scopes") -> frozenset[Scope]:
    chosen = frozenset(values)
    if not chosen:
        raise BadUserInput("Choose at least one scope.", field=field)
    return chosen


# The last instant we work with: series and lifetimes add periods to instants, and Python's
# datetime ends at 9999-12-31.
LATEST = datetime(9999, 1, 1, tzinfo=UTC)


def instant(value: datetime, *, field: str = "query", latest: datetime | None = LATEST) -> datetime:
    """Instants without a zone are read as UTC; anything past `latest` is refused."""
    try:
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:00-12:00 is past the end of datetime
        raise BadUserInput(f"{field} is past the last representable instant.", field=field) from exc
    if latest is not None and moment >= latest:
        raise BadUserInput(f"{field} must be before {LATEST.date().isoformat()}.", field=field)
    return moment


def future_instant(value: datetime, *, now: datetime, field: str) -> datetime:
    # Any future instant is accepted as an expiry, up to the end of datetime.
    moment = instant(value, field=field, latest=None)
    if moment <= now:
        raise BadUserInput(f"{field} must be in the future.", field=field)
    return moment


def page_size(value: int, *, field: str = "first") -> int:
    if not 1 <= value <= PAGE_MAX:
        raise BadUserInput(f"{field} must be between 1 and {PAGE_MAX}.", field=field)
    return value


def whole_range(value: int, *, low: int, high: int, field: str) -> int:
    if not low <= value <= high:
        raise BadUserInput(f"{field} must be between {low} and {high}.", field=field)
    return value
