"""API-key secrets: generation, checksum and hashing. Pure functions, no I/O.

A secret is `fm_` followed by 32 base62 characters: 26 random ones (about 154 bits) and a
6-character base62 CRC32 of those 26, so a mistyped or truncated key is refused without a
database lookup and secret scanners can tell a real key from noise (GitHub's scheme).

    SECRET_PATTERN = r"^fm_[0-9A-Za-z]{32}$"   (plus a valid checksum)
"""

from __future__ import annotations

import hashlib
import re
import secrets
import zlib

from keyplane.models.base import BASE62

SECRET_PREFIX = "fm_"
RANDOM_LENGTH = 26
CHECKSUM_LENGTH = 6
SECRET_PATTERN = r"^fm_[0-9A-Za-z]{32}$"
DISPLAY_PREFIX_LENGTH = len(SECRET_PREFIX) + 8
_SECRET_RE = re.compile(SECRET_PATTERN)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits))


def checksum(random_part: str) -> str:
    return _base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


def generate_secret() -> str:
    random_part = "".join(secrets.choice(BASE62) for _ in range(RANDOM_LENGTH))
    return SECRET_PREFIX + random_part + checksum(random_part)


def is_well_formed(secret: str) -> bool:
    """Format and checksum only; says nothing about whether the key exists."""
    if not _SECRET_RE.match(secret):
        return False
    body = secret[len(SECRET_PREFIX) :]
    random_part, check = body[:RANDOM_LENGTH], body[RANDOM_LENGTH:]
    return secrets.compare_digest(checksum(random_part), check)


def hash_secret(secret: str) -> str:
    """SHA-256 hex digest: keys carry enough entropy that a slow hash would only cost latency."""
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def display_prefix(secret: str) -> str:
    """`fm_AbCdEf12`: a literal prefix of the secret, safe to show in lists and logs."""
    return secret[:DISPLAY_PREFIX_LENGTH]
