"""The secret scan of CI (.ci/secrets) knows keyplane's credentials when it sees them."""

from __future__ import annotations

from pathlib import Path

import pytest
from detect_secrets.core.scan import scan_line
from detect_secrets.settings import transient_settings

from keyplane.auth.api_key import generate_secret
from keyplane.auth.invitation import generate_token

PLUGIN = Path(__file__).resolve().parent.parent / ".ci" / "secrets" / "keyplane_plugin.py"


def _found(line: str) -> list[tuple[str, str | None]]:
    plugins = [
        {"name": "KeyplaneApiKeyDetector", "path": PLUGIN.as_uri()},
        {"name": "KeyplaneInvitationTokenDetector", "path": PLUGIN.as_uri()},
    ]
    with transient_settings({"plugins_used": plugins}):
        return [(found.type, found.secret_value) for found in scan_line(line)]


def test_a_real_api_key_in_a_log_line_is_found() -> None:
    # given
    secret = generate_secret()

    # when
    found = _found(f'INFO keyplane.access: "GET /graphql?key={secret} HTTP/1.1" 200')

    # then
    assert found == [("keyplane API key", secret)]


def test_a_real_invitation_token_is_found() -> None:
    # given
    token = generate_token()

    # when
    found = _found(f"invited bob@example.com with {token}")

    # then
    assert found == [("keyplane invitation token", token)]


@pytest.mark.parametrize(
    "line",
    [
        "Authorization: Bearer fm_" + "x" * 32,  # a placeholder: its checksum fails
        "fm_AbCdEf12 used 3 times",  # a display prefix, safe to log
        "redacted: fm_…[redacted]",
    ],
)
def test_placeholders_and_prefixes_are_not_findings(line: str) -> None:
    assert _found(line) == []


def test_a_real_key_with_one_character_changed_is_not_a_finding() -> None:
    # given
    secret = generate_secret()
    mistyped = secret[:-1] + ("a" if secret[-1] != "a" else "b")

    # then
    assert _found(f"key {mistyped}") == []
