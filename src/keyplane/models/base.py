"""Opaque, typed row ids: a short noun prefix and 20 random base62 characters."""

from __future__ import annotations

import secrets
import string

BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ID_LENGTH = 20


def new_id(prefix: str) -> str:
    """`key_3hV0...`: never sequential, and never mistaken for a secret (`fm_...`)."""
    return f"{prefix}_" + "".join(secrets.choice(BASE62) for _ in range(ID_LENGTH))
