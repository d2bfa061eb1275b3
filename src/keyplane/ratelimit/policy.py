"""Which bucket a caller draws from: by how it authenticated and who it is."""

from __future__ import annotations

from functools import lru_cache

from keyplane.auth.principal import AuthKind, Principal
from keyplane.ratelimit.limiter import Bucket
from keyplane.ratelimit.tiers import Tier, Tiers, per_minute

# A bucket names its storage key once; callers come back, so their buckets are kept.
_bucket = lru_cache(maxsize=16384)(Bucket)


class RatePolicy:
    def __init__(self, tiers: Tiers) -> None:
        self.tiers = tiers

    def ip_bucket(self, ip: str) -> Bucket:
        return _bucket(Tier.ANONYMOUS, ip, self.tiers[Tier.ANONYMOUS])

    def bucket_for(self, principal: Principal, ip: str) -> Bucket:
        """Key id; OAuth iss + sub + client_id; dashboard user; else the client IP."""
        if principal.key is not None:
            override = principal.key.rate_limit_per_minute
            limit = per_minute(override) if override else self.tiers[Tier.API_KEY]
            return _bucket(Tier.API_KEY, principal.key.key_id, limit)
        if principal.kind is AuthKind.OAUTH and principal.oauth is not None:
            client = principal.oauth
            identity = f"{client.issuer} {client.subject} {client.client_id}"
            return _bucket(Tier.OAUTH, identity, self.tiers[Tier.OAUTH])
        if principal.kind is AuthKind.JWT and principal.user_id is not None:
            return _bucket(Tier.JWT, principal.user_id, self.tiers[Tier.JWT])
        return self.ip_bucket(ip)
