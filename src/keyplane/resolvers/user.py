"""Dashboard users: sign up, log in, log out.

After MAX_FAILED_LOGINS wrong passwords for one account within FAILURE_WINDOW, that account's
logins are refused for LOCKOUT, from whatever address they come. The refusal is the answer a
wrong password gets, after the same argon2 verification, so it tells a guesser nothing (not
even that the account exists). Failures and the lock live in the database, so every worker and
host counts and honours them alike.
"""

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
from keyplane.models import Invitation, LoginFailure, Session, User
from keyplane.resolvers import validate
from keyplane.settings import SignupPolicy

MAX_FAILED_LOGINS = 10
FAILURE_WINDOW = timedelta(minutes=15)
LOCKOUT = timedelta(minutes=15)
WRONG_EMAIL_OR_PASSWORD = "Wrong email or password."


@dataclass(frozen=True, slots=True)
class SessionGrant:
    access_token: str
    expires_at: datetime
    user: User


@dataclass(frozen=True, slots=True)
class UserPolicy:
    jwt_secret: str
    token_ttl: timedelta
    signup: SignupPolicy
    passwords: Passwords


async def sign_up(
    policy: UserPolicy, *, email: str, password: str, name: str, now: datetime
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


async def log_in(policy: UserPolicy, *, email: str, password: str, now: datetime) -> SessionGrant:
    user = await User.get_or_none(email=email.strip().lower())
    # Verify even when the account is missing or locked, so timing tells neither apart.
    ok = await policy.passwords.verify(user.password_hash if user else None, password)
    if user is None or (user.locked_until is not None and user.locked_until > now):
        raise InvalidCredentials(WRONG_EMAIL_OR_PASSWORD)
    if not ok:
        await _count_failure(user.id, now)
        raise InvalidCredentials(WRONG_EMAIL_OR_PASSWORD)
    await LoginFailure.filter(user_id=user.id).delete()  # a success starts the count afresh
    return await _open_session(policy, user, now)


async def _count_failure(user_id: str, now: datetime) -> None:
    """Record a wrong password; the MAX_FAILED_LOGINS-th within FAILURE_WINDOW locks the
    account for LOCKOUT, and the count starts again from zero once the lock ends."""
    async with in_transaction():
        await LoginFailure.filter(user_id=user_id, at__lte=now - FAILURE_WINDOW).delete()
        await LoginFailure.create(user_id=user_id, at=now)
        recent = await LoginFailure.filter(user_id=user_id).count()
        if recent >= MAX_FAILED_LOGINS:
            await User.filter(id=user_id).update(locked_until=now + LOCKOUT)
            await LoginFailure.filter(user_id=user_id).delete()


async def _open_session(policy: UserPolicy, user: User, now: datetime) -> SessionGrant:
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
    async with credentials.change():
        await Session.filter(id=principal.session_id, ended_at__isnull=True).update(ended_at=now)
    return True
