"""detect-secrets plugins for keyplane's own credentials: `fm_` API keys and `fmi_` invitations.

Loaded by file path (`detect-secrets scan --plugin .ci/secrets/keyplane_plugin.py`). An `fm_`
string counts only when its checksum holds (keyplane.auth.api_key.is_well_formed), so the
placeholders of documentation and tests (`fm_` + 32 x's) are not reported and every real key is.
Invitation tokens carry no checksum: any `fmi_` + 32 base62 characters counts.
"""

from __future__ import annotations

import re
from collections.abc import Generator
from typing import Any

from detect_secrets.plugins.base import RegexBasedDetector

from keyplane.auth import api_key

# Not preceded or followed by another base62 character or `_`: a longer token is not a key.
_API_KEY = re.compile(r"(?<![0-9A-Za-z_])fm_[0-9A-Za-z]{32}(?![0-9A-Za-z_])")
_INVITATION = re.compile(r"(?<![0-9A-Za-z_])fmi_[0-9A-Za-z]{32}(?![0-9A-Za-z_])")


class KeyplaneApiKeyDetector(RegexBasedDetector):
    """A keyplane API key: `fm_` + 26 random base62 characters + a 6-character checksum."""

    secret_type = "keyplane API key"
    denylist = (_API_KEY,)

    def analyze_string(self, string: str, **kwargs: Any) -> Generator[str, None, None]:
        for match in super().analyze_string(string):
            if api_key.is_well_formed(match):
                yield match


class KeyplaneInvitationTokenDetector(RegexBasedDetector):
    """A keyplane invitation token: `fmi_` + 32 random base62 characters."""

    secret_type = "keyplane invitation token"
    denylist = (_INVITATION,)
