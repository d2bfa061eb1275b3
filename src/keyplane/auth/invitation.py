"""Invitation tokens: generation, format check and hashing. Pure functions, no I/O.

A token is `fmi_` followed by 32 random base62 characters (about 190 bits). It is a bearer
secret delivered out of band, shown once and stored only as its SHA-256, like an API key's;
its prefix keeps it distinct from API keys (`fm_...`) and from invitation ids (`inv_...`).

    TOKEN_PATTERN = r"^fmi_[0-9A-Za-z]{32}$"
"""

from __future__ import annotations

import hashlib
import re
import secrets

from keyplane.models.base import BASE62

TOKEN_PREFIX = "fmi_"
RANDOM_LENGTH = 32
TOKEN_PATTERN = r"^fmi_[0-9A-Za-z]{32}$"
_TOKEN_RE = re.compile(TOKEN_PATTERN)


def generate_token() -> str:
    return TOKEN_PREFIX + "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))


def is_well_formed(token: str) -> bool:
    """Format only: a malformed token is refused without a database lookup."""
    return _TOKEN_RE.fullmatch(token) is not None


def hash_token(token: str) -> str:
    """SHA-256 hex digest: the token's entropy makes a slow hash pointless."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()
