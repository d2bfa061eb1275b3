"""Dashboard accounts: sign up, log in, log out."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from tortoise.exceptions import IntegrityError
from tortoise.transactions import in_transaction

from keyplane.auth import dashboard
from keyplane.auth.passwords import Passwords
from keyplane.auth.principal import Principal
from keyplane.auth.verified import VerifiedCredentials
from keyplane.errors import Conflict, Forbidden, InvalidCredentials, Unauthenticated
from keyplane.models import Invitation, Session, User
from keyplane.resolvers import validate
from keyplane.settings import SignupPolicy


@dataclass(frozen=True, slots=True)
class SessionGrant:
    access_token: str
    expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True)
class AccountPolicy:
    jwt_secret: str
    token_ttl: timedelta
    signup: SignupPolicy
    passwords: Passwords


async def sign_up(
    policy: AccountPolicy, *, email: str, password: str, name: str, now: datetime
) -> SessionGrant:
    email = validate.email(email)
    password = validate.password(password)
    name = validate.name(name)
    password_hash = await policy.passwords.hash(password)
    try:
        async with in_transaction():
            if policy.signup is SignupPolicy.CLOSED and not await _may_join_closed(email, now):
                raise Forbidden("Sign-up is closed: ask a project owner for an invitation.")
            user = await User.create(email=email, name=name, password_hash=password_hash)
    except IntegrityError as exc:
        raise Conflict("An account with this email already exists.") from exc
    return await _open_session(policy, user, now)


async def _may_join_closed(email: str, now: datetime) -> bool:
    if not await User.exists():
        return True
    return await Invitation.filter(
        email=email, accepted_at__isnull=True, expires_at__gt=now
    ).exists()


async def log_in(
    policy: AccountPolicy, *, email: str, password: str, now: datetime
) -> SessionGrant:
    user = await User.get_or_none(email=email.strip().lower())
    # Verify even when the account is missing, so timing does not reveal which emails exist.
    ok = await policy.passwords.verify(user.password_hash if user else None, password)
    if user is None or not ok:
        raise InvalidCredentials("Wrong email or password.")
    return await _open_session(policy, user, now)


async def _open_session(policy: AccountPolicy, user: User, now: datetime) -> SessionGrant:
    session = await Session.create(user=user, expires_at=now + policy.token_ttl)
    token, expires_at = dashboard.issue_token(
        secret=policy.jwt_secret,
        user_id=user.id,
        session_id=session.id,
        now=now,
        ttl=policy.token_ttl,
    )
    return SessionGrant(access_token=token, expires_at=expires_at, user=user)


async def log_out(principal: Principal, *, now: datetime, credentials: VerifiedCredentials) -> bool:
    if principal.session_id is None:
        raise Unauthenticated("logOut ends a dashboard session; none was presented.")
    await Session.filter(id=principal.session_id, ended_at__isnull=True).update(ended_at=now)
    await credentials.changed()
    return True
