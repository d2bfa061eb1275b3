"""How far one template, its data and its rendering may go, and the settings that change it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Defaults sized for invoices, letters and e-mails, far below what hurts a server:

    - a template's source: 256 KiB (UTF-8);
    - a document's `data`: 1 MiB of JSON;
    - a rendered document: 1 MiB (UTF-8), checked while the output streams, so a template
      printing 100 MB is stopped after its first mebibyte;
    - rendering (and compiling) time: 2 s of wall-clock time, then the child is killed;
    - a child's address space: 256 MiB (RLIMIT_AS), about ten times what a child needs idle;
    - children: 2, started on the first render, so at most 2 renders run at once per server
      process and others wait for a free child.
    """

    template_max_bytes: int = 256 * KIB
    data_max_bytes: int = 1 * MIB
    output_max_bytes: int = 1 * MIB
    timeout_seconds: float = 2.0
    memory_max_bytes: int = 256 * MIB
    workers: int = 2


# (setting, attribute, low, high, scale): the value read is multiplied by `scale`.
_WHOLE_SETTINGS = (
    ("KEYPLANE_TEMPLATE_MAX_BYTES", "template_max_bytes", KIB, 16 * MIB, 1),
    ("KEYPLANE_DOCUMENT_DATA_MAX_BYTES", "data_max_bytes", KIB, 16 * MIB, 1),
    ("KEYPLANE_RENDER_OUTPUT_MAX_BYTES", "output_max_bytes", KIB, 64 * MIB, 1),
    ("KEYPLANE_RENDER_MEMORY_MB", "memory_max_bytes", 64, 16 * KIB, MIB),
    ("KEYPLANE_RENDER_WORKERS", "workers", 1, 32, 1),
)


def read_render_limits(env: Mapping[str, str], problems: list[str]) -> RenderLimits:
    """The limits from `KEYPLANE_*` settings; each invalid one is added to `problems`."""
    defaults = RenderLimits()
    values: dict[str, int | float] = {}
    for name, attribute, low, high, scale in _WHOLE_SETTINGS:
        raw = env.get(name, "").strip()
        if not raw:
            continue
        try:
            number = int(raw)
        except ValueError:
            number = low - 1
        if not low <= number <= high:
            problems.append(f"{name} must be a whole number from {low} to {high} (got {raw!r})")
            continue
        values[attribute] = number * scale
    raw = env.get("KEYPLANE_RENDER_TIMEOUT_SECONDS", "").strip()
    if raw:
        try:
            seconds = float(raw)
        except ValueError:
            seconds = 0.0
        if not 0.1 <= seconds <= 60:
            problems.append(
                f"KEYPLANE_RENDER_TIMEOUT_SECONDS must be a number from 0.1 to 60 (got {raw!r})"
            )
        else:
            values["timeout_seconds"] = seconds
    return RenderLimits(
        template_max_bytes=int(values.get("template_max_bytes", defaults.template_max_bytes)),
        data_max_bytes=int(values.get("data_max_bytes", defaults.data_max_bytes)),
        output_max_bytes=int(values.get("output_max_bytes", defaults.output_max_bytes)),
        timeout_seconds=float(values.get("timeout_seconds", defaults.timeout_seconds)),
        memory_max_bytes=int(values.get("memory_max_bytes", defaults.memory_max_bytes)),
        workers=int(values.get("workers", defaults.workers)),
    )
