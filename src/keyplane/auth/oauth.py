"""OAuth 2.0 resource server: verifies RFC 9068 JWT access tokens against the issuer's JWKS."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import jwt

from keyplane.auth.verified import VerifiedTokens
from keyplane.permissions.scopes import Scope, parse_oauth_scope

if TYPE_CHECKING:
    # An annotation only: importing settings here would close auth -> settings -> ratelimit -> auth.
    from keyplane.settings import OAuthSettings

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "ES256"]
ACCESS_TOKEN_TYPES = {"at+jwt", "application/at+jwt"}
JWKS_TTL_SECONDS = 600.0
# An unknown `kid` triggers a refetch (key rotation), but at most this often.
JWKS_REFRESH_MIN_SECONDS = 30.0
LEEWAY_SECONDS = 10


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    issuer: str
    subject: str
    client_id: str
    scopes: frozenset[Scope]
    email: str | None
    email_verified: bool
    expires_at: float  # epoch seconds


def is_access_token(header: dict[str, Any]) -> bool:
    typ = header.get("typ")
    return isinstance(typ, str) and typ.lower() in ACCESS_TOKEN_TYPES


class JwksCache:
    """The issuer's signing keys, read from a file or fetched over HTTP and cached."""

    def __init__(self, source: str, *, http: httpx.AsyncClient | None = None) -> None:
        self._source = source
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._loaded_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> jwt.PyJWK | None:
        now = time.monotonic()
        if now - self._loaded_at > JWKS_TTL_SECONDS:
            await self._refresh()
        elif self._find(kid) is None and now - self._loaded_at > JWKS_REFRESH_MIN_SECONDS:
            await self._refresh()
        return self._find(kid)

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        # A JWKS with a single key may omit kids.
        return next(iter(self._keys.values())) if len(self._keys) == 1 else None

    async def _refresh(self) -> None:
        async with self._lock:
            try:
                document = await self._fetch()
                keys = jwt.PyJWKSet.from_dict(document).keys
            except (OSError, ValueError, httpx.HTTPError, jwt.PyJWTError) as exc:
                logger.warning("could not load the OAuth JWKS from %s: %s", self._source, exc)
                self._loaded_at = time.monotonic()
                return
            self._keys = {
                str(k.key_id) if k.key_id is not None else f"#{i}": k for i, k in enumerate(keys)
            }
            self._loaded_at = time.monotonic()

    async def _fetch(self) -> dict[str, Any]:
        if self._source.startswith(("http://", "https://")):
            if self._http is None:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self._source)
            else:
                response = await self._http.get(self._source)
            response.raise_for_status()
            document = response.json()
        else:
            text = await asyncio.to_thread(Path(self._source).read_text)
            document = json.loads(text)
        if not isinstance(document, dict):
            raise ValueError("a JWKS must be a JSON object")
        return document


class AccessTokenVerifier:
    def __init__(self, settings: OAuthSettings, jwks: JwksCache) -> None:
        self._settings = settings
        self._jwks = jwks
        self._verified: VerifiedTokens[AccessTokenClaims] = VerifiedTokens()

    def known(self, token: str) -> AccessTokenClaims | None:
        """The claims of a token this verifier accepted before and that has not expired."""
        return self._verified.get(token)

    async def verify(self, token: str, header: dict[str, Any]) -> AccessTokenClaims | None:
        """The claims of a valid access token from our issuer; None for any defect."""
        known = self._verified.get(token)
        if known is not None:
            return known
        claims = await self._verify(token, header)
        if claims is not None:
            self._verified.put(token, claims, claims.expires_at + LEEWAY_SECONDS)
        return claims

    async def _verify(self, token: str, header: dict[str, Any]) -> AccessTokenClaims | None:
        if header.get("alg") not in ALGORITHMS or not is_access_token(header):
            return None
        kid = header.get("kid")
        key = await self._jwks.key(kid if isinstance(kid, str) else None)
        if key is None or key.algorithm_name not in ALGORITHMS:
            return None
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[header["alg"]],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["iss", "aud", "exp", "iat", "sub", "client_id", "jti"]},
            )
        except jwt.PyJWTError:
            return None
        subject, client_id = claims.get("sub"), claims.get("client_id")
        if not isinstance(subject, str) or not isinstance(client_id, str):
            return None
        email = claims.get("email")
        return AccessTokenClaims(
            issuer=self._settings.issuer,
            subject=subject,
            client_id=client_id,
            scopes=parse_oauth_scope(claims.get("scope")),
            email=email.lower() if isinstance(email, str) else None,
            email_verified=claims.get("email_verified") is True,
            expires_at=float(claims["exp"]),
        )
