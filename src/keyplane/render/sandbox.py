"""The Jinja2 sandbox templates run in, and how its exceptions become RenderFailed.

This module runs inside the render children (see worker.py); the server process never
compiles or renders a template itself.
"""

from __future__ import annotations

import hashlib
import traceback
from collections import OrderedDict
from collections.abc import Generator, Iterator, Mapping
from typing import Any, cast

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from keyplane.render.failure import FailureReason, RenderFailed

TEMPLATE_FILENAME = "<template>"
MAX_MESSAGE = 400
# `a ** b` may not build an integer of more bits than this (its decimal form could not even be
# printed: Python refuses int -> str beyond 4300 digits, about 14,300 bits).
MAX_POWER_BITS = 16_384
CACHE_ENTRIES = 64
CACHE_SOURCE_BYTES = 8 * 1024 * 1024


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja2's sandbox (no Python internals, no mutation of the data, `range` capped at
    100,000 items) that also refuses to build strings, lists or numbers larger than a document
    may be: `'x' * 100000000` fails at once instead of allocating 100 MB. The operators are
    intercepted, which also stops Jinja from folding such constants while compiling.

    Undefined names fail loudly (StrictUndefined): a document with a silently empty field is
    worse than an error naming the missing one; `{% if x is defined %}` still works.
    """

    intercepted_binops = frozenset({"*", "**", "+"})

    def __init__(self, *, autoescape: bool, max_size: int) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=StrictUndefined,
            keep_trailing_newline=True,
            cache_size=0,
            auto_reload=False,
        )
        self.max_size = max_size
        # lipsum(n) writes n paragraphs of filler: nothing a document needs, a cheap way to burn.
        self.globals.pop("lipsum", None)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            self._check_repeat(left, right)
            self._check_repeat(right, left)
        elif operator == "+":
            if _is_sequence(left) and _is_sequence(right):
                self._check_size(len(left) + len(right))
        elif operator == "**":
            _check_power(left, right)
        return super().call_binop(context, operator, left, right)

    def _check_repeat(self, sequence: Any, times: Any) -> None:
        if _is_sequence(sequence) and isinstance(times, int):
            self._check_size(len(sequence) * times)

    def _check_size(self, size: int) -> None:
        if size > self.max_size:
            raise SecurityError(
                f"This would build a value of {size:,} characters or items; a document may "
                f"hold at most {self.max_size:,} bytes."
            )


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and abs(base) > 1 and exponent > 0:
        if exponent * abs(base).bit_length() > MAX_POWER_BITS:
            raise SecurityError("This power is too large a number to compute.")


_LOADING_TAGS = {
    nodes.Include: "include",
    nodes.Extends: "extends",
    nodes.Import: "import",
    nodes.FromImport: "from ... import",
}


def _refuse_loading(tree: nodes.Template) -> None:
    """Templates are self-contained: there is nothing to load, and no file may be named."""
    for node in tree.find_all(tuple(_LOADING_TAGS)):
        raise TemplateSyntaxError(
            f"'{_LOADING_TAGS[type(node)]}' is not available: a template cannot load another.",
            node.lineno,
        )


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def _template_line(error: BaseException) -> int | None:
    """The innermost template line in the traceback (Jinja rewrites its frames to them)."""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(error.__traceback__)
        if frame.filename == TEMPLATE_FILENAME
    ]
    return lines[-1] if lines else None


def _on_line(line: int | None) -> str:
    return f" on line {line}" if line is not None else ""


def compile_failure(error: BaseException) -> RenderFailed:
    """What went wrong while compiling a template's source."""
    if isinstance(error, TemplateSyntaxError):  # TemplateAssertionError too
        return RenderFailed(
            FailureReason.SYNTAX,
            _short(f"Template syntax error on line {error.lineno}: {error.message}"),
            line=error.lineno,
        )
    if isinstance(error, MemoryError):
        return RenderFailed(
            FailureReason.MEMORY, "Compiling the template needed more memory than allowed."
        )
    if isinstance(error, RecursionError | SyntaxError):
        # Python's own compiler refusing the generated code: more than 20 nested blocks, or
        # expressions nested hundreds deep.
        return RenderFailed(
            FailureReason.SYNTAX,
            "The template nests blocks or expressions too deeply to compile.",
        )
    return RenderFailed(
        FailureReason.SYNTAX,
        _short(f"The template cannot be compiled: {type(error).__name__}: {error}"),
    )


def render_failure(error: BaseException) -> RenderFailed:
    """What went wrong while rendering, with the template line where it happened."""
    line = _template_line(error)
    where = _on_line(line)
    if isinstance(error, SecurityError) or (
        isinstance(error, OverflowError) and "MAX_RANGE" in str(error)
    ):
        return RenderFailed(
            FailureReason.SECURITY,
            _short(f"The sandbox refused an operation{where}: {error}"),
            line=line,
        )
    if isinstance(error, UndefinedError):
        return RenderFailed(
            FailureReason.UNDEFINED,
            _short(f"Undefined value{where}: {error}. Check the names in data."),
            line=line,
        )
    if isinstance(error, RecursionError):
        return RenderFailed(
            FailureReason.RECURSION,
            f"Rendering recursed too deeply{where} (a macro or recursive loop calling itself "
            "without end?).",
            line=line,
        )
    if isinstance(error, MemoryError):
        return RenderFailed(
            FailureReason.MEMORY, f"Rendering needed more memory than allowed{where}.", line=line
        )
    return RenderFailed(
        FailureReason.ERROR,
        _short(f"Rendering failed{where}: {type(error).__name__}: {error}"),
        line=line,
    )


class Renderer:
    """Compiles (with a cache keyed by the source's hash) and renders with bounded output."""

    def __init__(self, *, output_max_bytes: int) -> None:
        self.output_max_bytes = output_max_bytes
        self._environments = {
            escape: BoundedSandbox(autoescape=escape, max_size=output_max_bytes)
            for escape in (False, True)
        }
        self._cache: OrderedDict[tuple[bool, str], tuple[Template, int]] = OrderedDict()
        self._cached_bytes = 0

    def compile(self, source: str, *, autoescape: bool) -> Template:
        key = (autoescape, hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest())
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit[0]
        environment = self._environments[autoescape]
        try:
            tree = environment.parse(source)
            _refuse_loading(tree)
            template = environment.from_string(tree)
        except Exception as error:  # the whole of a hostile source's failures
            raise compile_failure(error) from None
        self._remember(key, template, len(source))
        return template

    def _remember(self, key: tuple[bool, str], template: Template, size: int) -> None:
        self._cache[key] = (template, size)
        self._cached_bytes += size
        while len(self._cache) > CACHE_ENTRIES or self._cached_bytes > CACHE_SOURCE_BYTES:
            _, (_, dropped) = self._cache.popitem(last=False)
            self._cached_bytes -= dropped

    def render(self, source: str, *, autoescape: bool, data: Mapping[str, Any]) -> str:
        template = self.compile(source, autoescape=autoescape)
        # Template.generate is a generator function; closing it stops the template at once.
        chunks = cast(Generator[str, None, None], template.generate(data))
        try:
            output = self._collect(chunks)
        except RenderFailed:
            raise
        except Exception as error:  # whatever the template's expressions raise
            raise render_failure(error) from None
        finally:
            chunks.close()
        try:
            size = len(output.encode("utf-8"))
        except UnicodeEncodeError:
            raise RenderFailed(
                FailureReason.ERROR,
                "The rendered document is not valid Unicode (it contains a lone surrogate).",
            ) from None
        if size > self.output_max_bytes:
            raise self._too_large()
        if "\x00" in output:
            raise RenderFailed(
                FailureReason.ERROR, "The rendered document contains NUL characters."
            )
        return output

    def _collect(self, chunks: Iterator[str]) -> str:
        # Characters never outnumber UTF-8 bytes: stopping on characters is safe, and cheap.
        parts: list[str] = []
        length = 0
        for chunk in chunks:
            length += len(chunk)
            if length > self.output_max_bytes:
                raise self._too_large()
            parts.append(chunk)
        return "".join(parts)

    def _too_large(self) -> RenderFailed:
        return RenderFailed(
            FailureReason.OUTPUT_TOO_LARGE,
            f"The rendered document would exceed {self.output_max_bytes:,} bytes; "
            "rendering was stopped.",
        )
