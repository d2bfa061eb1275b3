"""Rate-limit response headers (X-RateLimit-* and the IETF draft's RateLimit-Policy/RateLimit)
and the 429 / 503 responses."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from functools import lru_cache

from starlette.responses import JSONResponse

from keyplane.errors import RateLimited
from keyplane.ratelimit.limiter import Decision

UNAVAILABLE_RETRY_SECONDS = 5


RawHeaders = list[tuple[bytes, bytes]]


@lru_cache(maxsize=256)
def _policy(tier: str, amount: int, window_seconds: int) -> RawHeaders:
    return [
        (b"x-ratelimit-limit", str(amount).encode()),
        (b"ratelimit-policy", f'"{tier}";q={amount};w={window_seconds}'.encode()),
    ]


def raw_rate_headers(decision: Decision, now: float) -> RawHeaders:
    """The rate-limit headers as ASGI header pairs, added to every admitted answer as is."""
    bucket = decision.bucket
    reset_in = max(0, math.ceil(decision.reset_at - now))
    remaining = str(decision.remaining)
    return [
        *_policy(bucket.tier.value, bucket.amount, bucket.window_seconds),
        (b"x-ratelimit-remaining", remaining.encode()),
        (b"x-ratelimit-reset", str(math.ceil(decision.reset_at)).encode()),
        (b"ratelimit", f'"{bucket.tier.value}";r={remaining};t={reset_in}'.encode()),
    ]


def rate_headers(decision: Decision, now: float) -> dict[str, str]:
    return {name.decode(): value.decode() for name, value in raw_rate_headers(decision, now)}


def too_many_requests(decision: Decision, now: float) -> JSONResponse:
    retry_after = decision.retry_after(now)
    reset_at = datetime.fromtimestamp(decision.reset_at, UTC).isoformat()
    body = {
        "data": None,
        "errors": [
            {
                "message": f"Rate limit of {decision.bucket.amount} requests per minute "
                f"exceeded; retry in {retry_after} s.",
                "extensions": {
                    "code": RateLimited.code,
                    "limit": decision.bucket.amount,
                    "resetAt": reset_at,
                    "retryAfter": retry_after,
                },
            }
        ],
    }
    headers = rate_headers(decision, now) | {"Retry-After": str(retry_after)}
    return JSONResponse(body, 429, headers=headers)


def limiter_unavailable() -> JSONResponse:
    body = {
        "data": None,
        "errors": [
            {
                "message": "Rate limiting is unavailable; retry shortly.",
                "extensions": {"code": "SERVICE_UNAVAILABLE"},
            }
        ],
    }
    return JSONResponse(body, 503, headers={"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)})
