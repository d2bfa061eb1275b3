"""Turns the Authorization header into a Principal, trying each credential reader in turn.

A reader returns None when the credential is not its kind and raises InvalidCredentials when
it is its kind but unusable, so every refusal looks the same to the caller (HTTP 401).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import jwt
from tortoise.exceptions import IntegrityError

from keyplane.auth import api_key as key_format
from keyplane.auth import dashboard
from keyplane.auth.oauth import AccessTokenClaims, AccessTokenVerifier, is_access_token
from keyplane.auth.principal import (
    ANONYMOUS,
    AuthKind,
    KeyGrant,
    OAuthClient,
    Principal,
    dashboard_principal,
)
from keyplane.auth.verified import VerifiedCredentials, VerifiedTokens
from keyplane.errors import InvalidCredentials
from keyplane.models import OAuthIdentity, User
from keyplane.permissions.scopes import Scope
from keyplane.records import KeyRecord, Lookups


class Authenticator:
    def __init__(
        self,
        *,
        jwt_secret: str,
        oauth: AccessTokenVerifier | None,
        lookups: Lookups,
        credentials: VerifiedCredentials,
        clock: Callable[[], datetime] = dashboard.utcnow,
    ) -> None:
        self._jwt_secret = jwt_secret
        self._oauth = oauth
        self._clock = clock
        self._lookups = lookups
        self._credentials = credentials
        self._verified: VerifiedTokens[dashboard.DashboardClaims] = VerifiedTokens()

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller; with a shared version, possibly trusted under the version this worker
        saw last, which `Principal.version` names for the rate limiter to confirm."""
        return await self._authenticate(authorization, None, read=True)

    async def authenticate_under(self, authorization: str | None, version: int | None) -> Principal:
        """The caller verified again under `version`, read before this call (None: bypass
        every kept entry): after the rate limiter found the version moved or unreadable."""
        return await self._authenticate(authorization, version, read=False)

    async def _authenticate(
        self, authorization: str | None, version: int | None, *, read: bool
    ) -> Principal:
        if authorization is None:
            return ANONYMOUS
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise InvalidCredentials(reason="bad_scheme")
        confirmed = True
        if read:
            # One read of the version, before every lookup, covers the key and its creator.
            version, confirmed = await self._credentials.request_version()
        principal = await self._api_key(token, version)
        if principal is None:
            principal = await self._jwt(token, version)
        if principal is None:
            raise InvalidCredentials(reason="unrecognised_token")
        if not confirmed:
            principal = replace(principal, version=version)
        return principal

    async def _api_key(self, token: str, version: int | None) -> Principal | None:
        if not token.startswith(key_format.SECRET_PREFIX):
            return None
        secret_hash = key_format.hash_secret(token)
        if version is not None:
            # The principal this key was, while nothing changed: only its expiry is new.
            kept = self._credentials.key_principals.get(secret_hash, version)
            if kept is not None and kept.key is not None and kept.key.record is not None:
                expires_at = kept.key.record.expires_at
                if expires_at is None or expires_at > self._clock():
                    return kept

        async def load() -> KeyRecord | None:
            # Only a kept key skips this: it was issued well formed, so checking the format
            # and checksum again would only cost time on every request.
            if not key_format.is_well_formed(token):
                raise InvalidCredentials(reason="malformed_key")
            return await self._lookups.key_by_hash(secret_hash)

        # Revoked keys are kept too (a revocation is final), and hashes no key has: a client
        # still sending a revoked or deleted key is refused without a database read.
        record = await self._credentials.through_at(
            version,
            self._credentials.keys,
            secret_hash,
            load,
            absent=self._credentials.unknown_keys,
            shared=True,
        )
        if record is None:
            raise InvalidCredentials(reason="unknown_key")
        if record.revoked_at is not None or (
            record.expires_at is not None and record.expires_at <= self._clock()
        ):
            raise InvalidCredentials(reason="revoked_or_expired_key", refused_key=record)
        scopes = record.scope_set & await self._creator_scopes(version, record)
        principal = Principal(
            kind=AuthKind.API_KEY,
            token_scopes=scopes,
            user_id=record.created_by_id,
            key=KeyGrant(
                key_id=record.id,
                environment_id=record.environment_id,
                project_id=record.project_id,
                scopes=scopes,
                created_by_id=record.created_by_id,
                rate_limit_per_minute=record.rate_limit_per_minute,
                record=record,
                restrictions=record.restrictions,
            ),
        )
        if version is not None:
            self._credentials.key_principals.put(secret_hash, principal, version)
        return principal

    async def _creator_scopes(self, version: int | None, record: KeyRecord) -> frozenset[Scope]:
        """What the key's creator may do now in the key's environment: a key never does more,
        so a demotion, a withdrawn environment or a removal narrows it from the next request.
        Member writes move the credentials' version, so a kept membership is never stale."""
        member = await self._credentials.through_at(
            version,
            self._credentials.creators,
            f"{record.project_id} {record.created_by_id}",
            lambda: self._lookups.member(
                project_id=record.project_id, user_id=record.created_by_id
            ),
            absent=self._credentials.non_members,
            shared=True,
        )
        return frozenset() if member is None else member.scopes_in(record.environment_id)

    async def _jwt(self, token: str, version: int | None) -> Principal | None:
        # A token verified before skips even the header's decoding.
        known = self._verified.get(token)
        if known is not None:
            return await self._session(known, version)
        if self._oauth is not None:
            verified = self._oauth.known(token)
            if verified is not None:
                return await self._oauth_principal(verified, version)
        try:
            header: dict[str, Any] = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if is_access_token(header):
            return await self._oauth_token(token, header, version)
        if dashboard.is_dashboard_token(header):
            return await self._dashboard_token(token, version)
        return None

    async def _dashboard_token(self, token: str, version: int | None) -> Principal:
        claims = dashboard.verify_token(token, secret=self._jwt_secret)
        if claims is None:
            raise InvalidCredentials(reason="bad_dashboard_token")
        self._verified.put(token, claims, claims.expires_at)
        return await self._session(claims, version)

    async def _session(self, claims: dashboard.DashboardClaims, version: int | None) -> Principal:
        expires_at = await self._credentials.through_at(
            version,
            self._credentials.sessions,
            claims.session_id,
            lambda: self._lookups.live_session(
                session_id=claims.session_id, user_id=claims.user_id
            ),
            shared=True,
        )
        if expires_at is None or expires_at <= self._clock():
            raise InvalidCredentials(reason="ended_session")
        return dashboard_principal(claims.user_id, claims.session_id)

    async def _oauth_token(
        self, token: str, header: dict[str, Any], version: int | None
    ) -> Principal:
        if self._oauth is None:
            raise InvalidCredentials(reason="oauth_not_configured")
        claims = await self._oauth.verify(token, header)
        if claims is None:
            raise InvalidCredentials(reason="bad_oauth_token")
        return await self._oauth_principal(claims, version)

    async def _oauth_principal(self, claims: AccessTokenClaims, version: int | None) -> Principal:
        async def linked() -> str | None:
            user_id = await self._lookups.linked_user(issuer=claims.issuer, subject=claims.subject)
            if user_id is None:
                user_id = await _link_by_email(
                    claims.issuer, claims.subject, claims.email, claims.email_verified
                )
            return user_id

        user_id = await self._credentials.through_at(
            version,
            self._credentials.identities,
            f"{claims.issuer} {claims.subject}",
            linked,
            shared=True,
        )
        if user_id is None:
            raise InvalidCredentials(reason="unlinked_oauth_user")
        return Principal(
            kind=AuthKind.OAUTH,
            token_scopes=claims.scopes,
            user_id=user_id,
            oauth=OAuthClient(
                issuer=claims.issuer, subject=claims.subject, client_id=claims.client_id
            ),
        )


async def _link_by_email(
    issuer: str, subject: str, email: str | None, email_verified: bool
) -> str | None:
    """Link (iss, sub) to the user owning a verified email claim, the first time it is seen."""
    if email is None or not email_verified:
        return None
    user = await User.get_or_none(email=email)
    if user is None:
        return None
    try:
        await OAuthIdentity.create(issuer=issuer, subject=subject, user=user)
    except IntegrityError:
        # Another request linked the same identity first; theirs stands.
        again = await OAuthIdentity.filter(issuer=issuer, subject=subject).values_list(
            "user_id", flat=True
        )
        return str(again[0]) if again else None
    return str(user.id)
