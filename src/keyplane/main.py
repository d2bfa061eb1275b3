"""The ASGI entry point for uvicorn: settings from the environment, read once per worker."""

from __future__ import annotations

from starlette.applications import Starlette

from keyplane.app import create_app
from keyplane.redaction import redact_every_handler
from keyplane.settings import Settings


def app_factory() -> Starlette:
    # `keyplane serve` configured filtered handlers already; a bare uvicorn run has its own.
    redact_every_handler()
    return create_app(Settings.from_environ())
