"""A render child: capped in memory, it compiles and renders one request at a time.

The protocol is JSON over a socket pair framed by multiprocessing's Connection, never pickle,
so that even a template that escaped the sandbox could not make the server run code by answering.

    parent -> child  {"op": "check" | "render", "source": str, "autoescape": bool,
                      "data": str (JSON text of an object; render only)}
    child -> parent  {"ready": pid}                                    once, at start
                     {"ok": true, "output": str | null}
                     {"ok": false, "reason": FailureReason, "message": str, "line": int | null,
                      "restart": bool}
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
from multiprocessing.connection import Connection
from typing import Any

from keyplane.render.failure import FailureReason, RenderFailed
from keyplane.render.sandbox import Renderer


def limit_memory(max_bytes: int) -> None:
    """Cap this process's address space; allocations past it raise MemoryError."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        max_bytes = min(max_bytes, hard)
    resource.setrlimit(resource.RLIMIT_AS, (max_bytes, max_bytes))


def handle(renderer: Renderer, raw: bytes) -> dict[str, Any]:
    failure: RenderFailed
    try:
        request = json.loads(raw)
        source = request["source"]
        autoescape = bool(request["autoescape"])
        if request["op"] == "check":
            renderer.compile(source, autoescape=autoescape)
            return {"ok": True, "output": None}
        data = json.loads(request["data"])
        return {"ok": True, "output": renderer.render(source, autoescape=autoescape, data=data)}
    except RenderFailed as error:
        failure = error
    except MemoryError:
        failure = RenderFailed(FailureReason.MEMORY, "Rendering needed more memory than allowed.")
    except (ValueError, KeyError, TypeError, RecursionError):
        failure = RenderFailed(FailureReason.ERROR, "The renderer could not read this request.")
    return {
        "ok": False,
        "reason": failure.reason.value,
        "message": failure.message,
        "line": failure.line,
        # After running out of memory the heap may be fragmented: start afresh.
        "restart": failure.reason is FailureReason.MEMORY,
    }


def serve(connection: Connection, memory_max_bytes: int, output_max_bytes: int) -> None:
    """Serve requests until the pipe closes."""
    # Ctrl-C reaches the whole process group; the server decides when its children stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    renderer = Renderer(output_max_bytes=output_max_bytes)
    limit_memory(memory_max_bytes)
    connection.send_bytes(json.dumps({"ready": os.getpid()}).encode())
    while True:
        try:
            raw = connection.recv_bytes()
        except (EOFError, OSError):
            return  # the server closed the pipe or exited: nothing left to serve
        reply = handle(renderer, raw)
        # ASCII-escaped: messages may quote lone surrogates that UTF-8 cannot carry.
        connection.send_bytes(json.dumps(reply).encode("ascii"))


def main(argv: list[str]) -> None:
    """`python -m keyplane.render.worker FD MEMORY_MAX_BYTES OUTPUT_MAX_BYTES`, as the pool runs
    it: FD is this child's end of a socket pair."""
    fd, memory_max_bytes, output_max_bytes = (int(value) for value in argv)
    serve(Connection(fd), memory_max_bytes, output_max_bytes)


if __name__ == "__main__":
    main(sys.argv[1:])
