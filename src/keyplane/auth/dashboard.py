"""Dashboard session tokens: short-lived HS256 JWTs whose `sid` names a revocable Session."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

ISSUER = "keyplane"
AUDIENCE = "keyplane-dashboard"
ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class DashboardClaims:
    user_id: str
    session_id: str
    expires_at: float  # epoch seconds


def issue_token(
    *, secret: str, user_id: str, session_id: str, now: datetime, ttl: timedelta
) -> tuple[str, datetime]:
    expires_at = now + ttl
    token = jwt.encode(
        {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user_id,
            "sid": session_id,
            "iat": int(now.timestamp()),
            "exp": int(expires_at.timestamp()),
        },
        secret,
        algorithm=ALGORITHM,
    )
    return token, expires_at.replace(microsecond=0)


def is_dashboard_token(header: dict[str, object]) -> bool:
    return header.get("alg") == ALGORITHM


def verify_token(token: str, *, secret: str) -> DashboardClaims | None:
    """The claims of a valid, unexpired token signed by us; None otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "sid"]},
        )
    except jwt.PyJWTError:
        return None
    user_id, session_id = claims.get("sub"), claims.get("sid")
    if not isinstance(user_id, str) or not isinstance(session_id, str):
        return None
    return DashboardClaims(user_id=user_id, session_id=session_id, expires_at=float(claims["exp"]))


def utcnow() -> datetime:
    return datetime.now(UTC)
