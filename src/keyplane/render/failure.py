"""Why a template could not be compiled or rendered, in words a template author can act on."""

from __future__ import annotations

from enum import StrEnum


class FailureReason(StrEnum):
    SYNTAX = "SYNTAX"  # the template does not compile
    UNDEFINED = "UNDEFINED"  # it uses a variable or attribute the data lacks
    SECURITY = "SECURITY"  # the sandbox refused an operation (Python internals, huge values)
    RECURSION = "RECURSION"  # macros or loops nested without end
    TIMEOUT = "TIMEOUT"  # it ran past the time limit; its child process was replaced
    OUTPUT_TOO_LARGE = "OUTPUT_TOO_LARGE"  # the output passed the size limit
    MEMORY = "MEMORY"  # it needed more memory than a child may have
    ERROR = "ERROR"  # any other exception raised by the template's own expressions
    CRASHED = "CRASHED"  # the child process died while working


class RenderFailed(Exception):
    """A template failed; `message` is safe to show to its author (it never names our code)."""

    def __init__(self, reason: FailureReason, message: str, *, line: int | None = None) -> None:
        self.reason = reason
        self.message = message
        self.line = line
        super().__init__(message)


class RendererUnavailable(RuntimeError):
    """The server could not start a render child: our fault, not the template's."""
