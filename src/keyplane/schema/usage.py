"""GraphQL types for usage series."""

from __future__ import annotations

from datetime import datetime

import strawberry

from keyplane.resolvers import usage
from keyplane.resolvers.usage import Granularity

strawberry.enum(Granularity, description="The period one usage point covers.")


@strawberry.type(description="Requests and refusals in one period.")
class UsagePoint:
    at: datetime = strawberry.field(description="Start of the period (UTC).")
    requests: int = strawberry.field(description="Admitted requests.")
    refused: int = strawberry.field(description="Refusals of every kind (401 + 403 + 429).")
    unauthorized: int = strawberry.field(
        description="HTTP 401: the key was presented after being revoked or after it expired."
    )
    forbidden: int = strawberry.field(description="Admitted requests refused as FORBIDDEN.")
    rate_limited: int = strawberry.field(description="HTTP 429: over the rate limit.")

    @classmethod
    def from_point(cls, point: usage.UsagePoint) -> UsagePoint:
        counts = point.counts
        return cls(
            at=point.at,
            requests=counts.requests,
            refused=counts.refused,
            unauthorized=counts.unauthorized,
            forbidden=counts.forbidden,
            rate_limited=counts.rate_limited,
        )
