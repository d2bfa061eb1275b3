"""The server side of rendering: a lazily started pool of long-lived child processes.

Each request goes to an idle child; a dedicated thread sends it and waits on the pipe with the
time limit, so the event loop never blocks. A child that overruns the limit is killed and
replaced before its slot is handed out again; one that dies is replaced the same way. The
server process only ever reads JSON from a child, never runs a template itself.

Children are fresh interpreters (`python -m keyplane.render.worker`), like multiprocessing's
'spawn' start method, but started with subprocess: spawn would re-run the server's main script
in every child (`keyplane`, `uvicorn`...), loading the whole app into a process whose memory is
capped and failing outright under a script without a `__main__` guard. The pipe is a socket
pair framed by multiprocessing's Connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

from keyplane.render.failure import FailureReason, RendererUnavailable, RenderFailed
from keyplane.render.limits import RenderLimits

logger = logging.getLogger("keyplane.render")

# A fresh interpreter importing Jinja2 takes well under a second; allow for a loaded machine.
START_TIMEOUT_SECONDS = 30.0


class _Child:
    """One slot of the pool: a child process and its pipe, used by one thread at a time."""

    def __init__(self, limits: RenderLimits, stopping: threading.Event, number: int) -> None:
        self._limits = limits
        self._stopping = stopping
        self._number = number
        self._process: subprocess.Popen[bytes] | None = None
        self._connection: Connection | None = None
        # A reply holds at most the output, JSON-escaped (at worst 6 bytes a character).
        self._reply_max_bytes = limits.output_max_bytes * 6 + 64 * 1024

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def call(self, request: bytes) -> dict[str, Any]:
        """Send one request and wait for its reply, within the time limit (blocking)."""
        connection = self._started()
        try:
            connection.send_bytes(request)
        except OSError:
            # The child died while idle (killed from outside): replace it and try once more.
            self.kill()
            connection = self._started()
            connection.send_bytes(request)
        if not connection.poll(self._limits.timeout_seconds):
            self._replace()
            raise RenderFailed(
                FailureReason.TIMEOUT,
                f"Rendering took longer than {self._limits.timeout_seconds:g} s and was stopped.",
            )
        try:
            reply: dict[str, Any] = json.loads(connection.recv_bytes(self._reply_max_bytes))
        except (EOFError, OSError, ValueError):
            self._replace()
            raise RenderFailed(
                FailureReason.CRASHED, "The renderer stopped while working on this template."
            ) from None
        if reply.get("restart"):
            self._replace()
        return reply

    def _started(self) -> Connection:
        if self._stopping.is_set():
            raise RendererUnavailable("the render pool is stopping")
        if self._process is not None and self._process.poll() is None and self._connection:
            return self._connection
        self.kill()
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "keyplane.render.worker",
                    str(theirs.fileno()),
                    str(self._limits.memory_max_bytes),
                    str(self._limits.output_max_bytes),
                ],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
            )
        except OSError as error:
            ours.close()
            raise RendererUnavailable(f"a render child failed to start: {error!r}") from error
        finally:
            theirs.close()  # only the child holds its end: its death then reads as EOF here
        connection = Connection(ours.detach())
        self._process, self._connection = process, connection
        try:
            if not connection.poll(START_TIMEOUT_SECONDS):
                raise RendererUnavailable("a render child did not start in time")
            json.loads(connection.recv_bytes(1024))
        except (EOFError, OSError, ValueError) as error:
            self.kill()
            raise RendererUnavailable(f"a render child failed to start: {error!r}") from error
        except RendererUnavailable:
            self.kill()
            raise
        logger.debug("render child %s started (pid %s)", self._number, process.pid)
        return connection

    def _replace(self) -> None:
        """Kill the child; start its successor now, so the next request finds it warm."""
        self.kill()
        if self._stopping.is_set():
            return
        try:
            self._started()
        except RendererUnavailable:
            logger.exception("could not replace a render child")

    def kill(self) -> None:
        process, connection = self._process, self._connection
        self._process = self._connection = None
        if process is not None:
            if process.poll() is None:
                process.kill()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                logger.error("render child %s (pid %s) did not die", self._number, process.pid)
        if connection is not None:
            connection.close()

    def signal_kill(self) -> None:
        """Kill the process only (safe from another thread while `call` waits on the pipe)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()


class RenderPool:
    """Compiles and renders templates in child processes, bounded by `RenderLimits`.

    Nothing starts until the first request; `stop()` (from the app's lifespan) kills the
    children. Both `check` and `render` raise RenderFailed for anything the template did.
    """

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self._stopping = threading.Event()
        self._children: list[_Child] = []
        self._idle: asyncio.Queue[_Child] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def check(self, source: str, *, autoescape: bool) -> None:
        """Compile `source` in the sandbox: RenderFailed(SYNTAX, ...) names the line."""
        await self._call({"op": "check", "source": source, "autoescape": autoescape})

    async def render(self, source: str, *, autoescape: bool, data_json: str) -> str:
        """Render `source` with `data_json` (the JSON text of an object) as its variables."""
        reply = await self._call(
            {"op": "render", "source": source, "autoescape": autoescape, "data": data_json}
        )
        output = reply.get("output")
        if not isinstance(output, str):
            raise RenderFailed(FailureReason.CRASHED, "The renderer answered without a document.")
        return output

    @property
    def child_pids(self) -> list[int]:
        """Process ids of the running children (for tests and diagnostics)."""
        return [pid for child in self._children if (pid := child.pid) is not None]

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        idle, executor = self._started()
        payload = json.dumps(request).encode("ascii")
        child = await idle.get()
        loop = asyncio.get_running_loop()

        def give_back(_: Future[dict[str, Any]]) -> None:
            # The slot returns only when its thread is done with it, even if the request
            # that used it was cancelled meanwhile.
            try:
                loop.call_soon_threadsafe(idle.put_nowait, child)
            except RuntimeError:
                pass  # the loop is closed: the pool is gone with it

        try:
            future = executor.submit(child.call, payload)
        except RuntimeError:
            idle.put_nowait(child)
            raise RendererUnavailable("the render pool is stopped") from None
        future.add_done_callback(give_back)
        reply = await asyncio.wrap_future(future)
        if not reply.get("ok"):
            raise RenderFailed(
                _reason(reply.get("reason")),
                str(reply.get("message") or "Rendering failed."),
                line=reply.get("line") if isinstance(reply.get("line"), int) else None,
            )
        return reply

    def _started(self) -> tuple[asyncio.Queue[_Child], ThreadPoolExecutor]:
        if self._stopping.is_set():
            raise RendererUnavailable("the render pool is stopped")
        if self._idle is None or self._executor is None:
            count = self.limits.workers
            self._children = [_Child(self.limits, self._stopping, n) for n in range(count)]
            self._idle = asyncio.Queue()
            for child in self._children:
                self._idle.put_nowait(child)
            self._executor = ThreadPoolExecutor(count, thread_name_prefix="keyplane-render")
        return self._idle, self._executor

    async def stop(self) -> None:
        """Kill every child; waits for the threads that were talking to them."""
        self._stopping.set()
        for child in self._children:
            child.signal_kill()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        children, self._children = self._children, []
        for child in children:
            await asyncio.to_thread(child.kill)


def _reason(value: object) -> FailureReason:
    try:
        return FailureReason(str(value))
    except ValueError:
        return FailureReason.ERROR
