"""Fixtures of the usage tests: the background flusher slowed down to once an hour, so each test
decides when counts reach the database (`await usage.flush()`); one test restores a short
interval (its `flush_seconds`) to watch it work."""

from __future__ import annotations

from dataclasses import replace

import pytest
from starlette.applications import Starlette

from keyplane.settings import Settings
from keyplane.usage.buffer import UsageBuffer


@pytest.fixture
def flush_seconds() -> float:
    return 3600.0


@pytest.fixture
def settings(settings: Settings, flush_seconds: float) -> Settings:
    return replace(settings, usage_flush_seconds=flush_seconds)


@pytest.fixture
def usage(app: Starlette) -> UsageBuffer:
    buffer: UsageBuffer = app.state.services.usage
    return buffer
