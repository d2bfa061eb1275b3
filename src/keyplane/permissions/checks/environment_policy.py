"""Built-in rule: an environment's key policy, which every key issued or changed there keeps.

Not a check run on requests: keys outside a policy are refused when they are created,
updated or rotated (BAD_USER_INPUT naming the rule), and those issued before the policy are
listed by `Environment.keysOutsidePolicy`, not cut off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from keyplane.errors import BadUserInput

MAX_LIFETIME_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Policy:
    require_expiry: bool = False
    max_lifetime_days: int | None = None
    # Scope names (built-in and extra) a key may carry here; empty: any.
    allowed_scopes: frozenset[str] = frozenset()

    def violations(
        self, *, scopes: frozenset[str], issued_at: datetime, expires_at: datetime | None
    ) -> list[BadUserInput]:
        """Every rule a key with these scopes and this lifetime breaks, as the error each
        gives (none: the key keeps the policy)."""
        found: list[BadUserInput] = []
        if expires_at is None and self.require_expiry:
            found.append(
                BadUserInput(
                    "This environment's policy requires an expiry (requireExpiry).",
                    field="expiresAt",
                )
            )
        elif expires_at is None and self.max_lifetime_days is not None:
            found.append(
                BadUserInput(
                    "This environment's policy requires an expiry at most "
                    f"{self.max_lifetime_days} days away (maxLifetimeDays).",
                    field="expiresAt",
                )
            )
        if (
            expires_at is not None
            and self.max_lifetime_days is not None
            and expires_at - issued_at > timedelta(days=self.max_lifetime_days)
        ):
            found.append(
                BadUserInput(
                    "This environment's policy allows keys to live at most "
                    f"{self.max_lifetime_days} days (maxLifetimeDays).",
                    field="expiresAt",
                )
            )
        outside = scopes - self.allowed_scopes if self.allowed_scopes else frozenset()
        if outside:
            found.append(
                BadUserInput(
                    "This environment's policy does not allow the scopes "
                    f"{', '.join(sorted(outside))} (allowedScopes).",
                    field="scopes",
                )
            )
        return found

    def require(
        self, *, scopes: frozenset[str], issued_at: datetime, expires_at: datetime | None
    ) -> None:
        """BAD_USER_INPUT naming the first rule broken, if any."""
        found = self.violations(scopes=scopes, issued_at=issued_at, expires_at=expires_at)
        if found:
            raise found[0]


NO_POLICY = Policy()
