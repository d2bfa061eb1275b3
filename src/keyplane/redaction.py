"""No secret in any log: API keys, invitation tokens, JWTs and passwords are redacted.

The filter sits on handlers, not loggers: a logger's filters do not see the records its
children propagate, a handler's see every record it writes (uvicorn's access and error logs
included). Secrets keep their visible kind (`fm_…[redacted]`), so a log still tells that a key
was sent where it should not have been.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

from uvicorn.config import LOGGING_CONFIG

REDACTED = "…[redacted]"
_MAYBE_SECRET = re.compile(r"fm_|fmi_|eyJ|password", re.IGNORECASE)
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"fm_[0-9A-Za-z]{8,}"), "fm_" + REDACTED),
    (re.compile(r"fmi_[0-9A-Za-z]{8,}"), "fmi_" + REDACTED),
    (re.compile(r"eyJ[0-9A-Za-z_-]*\.[0-9A-Za-z_-]+\.[0-9A-Za-z_-]*"), "eyJ" + REDACTED),
    # "password": "…", 'password': '…', password: "…" (a GraphQL literal), newPassword="…"
    (
        re.compile(r"""([A-Za-z_]*password["']?\s*[:=]\s*)(["'])(?:\\.|(?!\2).)*\2""", re.I),
        r"\1\2[redacted]\2",
    ),
    # password=… in a query string or a form
    (re.compile(r"([A-Za-z_]*password=)[^&\s\"']+", re.I), r"\1[redacted]"),
    # either of the above percent-encoded in a URL: password%22%3A%22…%22, password:%22…%22
    (
        re.compile(r"(password(?:%2[27])?(?::|%3A)(?:%20|\+)*(%2[27])).*?\2", re.I),
        r"\1[redacted]\2",
    ),
)


def redact(text: str) -> str:
    if _MAYBE_SECRET.search(text) is None:
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def _redacted_arg(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, int | float):
        return value  # keeps %d and %.1f working
    shown = f"{value!s} {value!r}"
    return redact(str(value)) if redact(shown) != shown else value


class RedactSecrets(logging.Filter):
    """Rewrites each record's message, arguments and traceback text before any handler
    formats it; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args: Any = record.args
        if isinstance(args, tuple):
            # uvicorn's access formatter unpacks these five values: keep the tuple's shape.
            record.args = tuple(_redacted_arg(arg) for arg in args)
        elif isinstance(args, dict):
            record.args = {name: _redacted_arg(arg) for name, arg in args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set: format the traceback once, redacted.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def redact_every_handler() -> None:
    """Add the filter to each handler configured so far (`uvicorn keyplane.main:app_factory`
    run bare, where logging is uvicorn's own)."""
    loggers = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):
            if not any(isinstance(f, RedactSecrets) for f in handler.filters):
                handler.addFilter(RedactSecrets())


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration, with the filter on every handler and keyplane's own
    records (the root logger) written to stderr through a filtered handler too."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["filters"] = {"redact_secrets": {"()": "keyplane.redaction.RedactSecrets"}}
    config["formatters"]["keyplane"] = {"format": "%(levelname)s %(name)s: %(message)s"}
    config["handlers"]["keyplane"] = {
        "formatter": "keyplane",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    for handler in config["handlers"].values():
        handler["filters"] = ["redact_secrets"]
    config["root"] = {"handlers": ["keyplane"], "level": "INFO"}
    return config
