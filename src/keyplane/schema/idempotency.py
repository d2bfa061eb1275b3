"""The `idempotencyKey` input field and `replayed` payload field shared by retryable mutations."""

from __future__ import annotations

from typing import Any

import strawberry

IDEMPOTENCY_KEY = (
    "Any string of 1 to 255 characters, new for each distinct request. Sent again by the same "
    "caller with the same input within 24 hours, the first call's result is returned (nothing "
    "is done twice; a secret or token is not shown again); with another input: CONFLICT."
)
REPLAYED = (
    "True when this answers a retry with the same idempotencyKey: nothing was done, and the "
    "secret or token is null (it was shown once, to the first call)."
)


def idempotency_key_field() -> Any:
    """An input's optional `idempotencyKey`."""
    return strawberry.field(default=None, description=IDEMPOTENCY_KEY)


def replayed_field() -> Any:
    """A payload's `replayed` flag."""
    return strawberry.field(default=False, description=REPLAYED)
