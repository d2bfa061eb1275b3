"""The ASGI entry point for uvicorn: settings from the environment, read once per worker."""

from __future__ import annotations

from starlette.applications import Starlette

from keyplane.app import create_app
from keyplane.settings import Settings


def app_factory() -> Starlette:
    return create_app(Settings.from_environ())
