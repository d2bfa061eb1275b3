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
    return value  # uvicorn's access arguments: an address, a method, a path, a version, a status


class RedactSecrets(logging.Filter):
    """Rewrites each record's message and traceback text before any handler formats it; never
    drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            # Its formatter unpacks these five values: keep the tuple, redact each string.
            record.args = tuple(_redacted_arg(arg) for arg in record.args)
        else:
            # The whole message, since a secret may straddle the format and its arguments.
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: the formatter reports it its own way
                message = None
            if message is not None and (redacted := redact(message)) != message:
                record.msg, record.args = redacted, None
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
