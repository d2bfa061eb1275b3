"""Rate-limit response headers (X-RateLimit-* and the IETF draft's RateLimit-Policy/RateLimit)
and the 429 / 503 responses."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from starlette.responses import JSONResponse

from keyplane.errors import RateLimited
from keyplane.ratelimit.limiter import Decision

UNAVAILABLE_RETRY_SECONDS = 5


def rate_headers(decision: Decision, now: float) -> dict[str, str]:
    bucket = decision.bucket
    reset_in = max(0, math.ceil(decision.reset_at - now))
    return {
        "X-RateLimit-Limit": str(bucket.amount),
        "X-RateLimit-Remaining": str(decision.remaining),
        "X-RateLimit-Reset": str(math.ceil(decision.reset_at)),
        "RateLimit-Policy": f'"{bucket.tier.value}";q={bucket.amount};w={bucket.window_seconds}',
        "RateLimit": f'"{bucket.tier.value}";r={decision.remaining};t={reset_in}',
    }


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
                "extensions": {"code": "INTERNAL"},
            }
        ],
    }
    return JSONResponse(body, 503, headers={"Retry-After": str(UNAVAILABLE_RETRY_SECONDS)})
