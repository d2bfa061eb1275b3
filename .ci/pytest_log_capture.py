"""A pytest plugin for CI: each pytest-xdist worker writes its own `--log-file`.

pytest opens `--log-file` for writing in every process, so with `-n 2` the workers would
truncate and overwrite one another's lines. With this plugin (`-p pytest_log_capture`, with .ci
on PYTHONPATH) worker gw0 writes `<log-file>.gw0`, gw1 `<log-file>.gw1`, and so on, so that
the secret scan reads every line the suite logged.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    path = config.getoption("log_file", None)
    if worker and path:
        config.option.log_file = f"{path}.{worker}"
