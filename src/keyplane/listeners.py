"""One listening socket per worker, so that the kernel spreads connections over `--workers`.

uvicorn's `--workers N` binds one socket in its supervisor and hands that same socket to every
worker: all of them accept from one queue, and the worker whose event loop wakes first takes
the connections that are waiting, several in a row. Clients that open their keep-alive
connections at once (an integrator's connection pool, wrk) then sit mostly on one worker:
measured with 32 connections to `--workers 2` on a two-core machine, the split was 31/1, 26/6
and 22/10 in three runs, and a second worker added little (bench/results/scaleout.md).

With SO_REUSEPORT (Linux) each worker binds a socket of its own to the same address, and the
kernel gives each new connection to one of those sockets by a hash of the connection's
addresses: an even spread in expectation, whichever worker is awake. The supervisor binds the
address first without listening (a socket that does not listen is given no connections), so
a port in use is reported before any worker starts and stays held while workers restart.
uvicorn has no such setting (its pull request #2472 proposes one); elsewhere than Linux the
kernel does not balance SO_REUSEPORT sockets, and uvicorn's shared socket is kept. The cost:
a worker that dies takes with it the connections the kernel had queued on its socket and it had
not yet accepted (they are reset), where a shared socket would have left them to the others.

The uvicorn behaviour relied on: `uvicorn.supervisors.Multiprocess` hands each worker its
sockets by pickling them into a `spawn`ed process. `WorkerListener` pickles to "bind a new
socket to my address", so each worker (and each restarted one) unpickles its own.
tests/test_listeners.py checks the pickling and the kernel's spread; tests/test_serve.py
checks that every worker of a real `keyplane serve --workers 2` listens on a socket of its own
and is given connections, and that a worker the supervisor starts again after one died does
too, which fails loudly if an upgrade of uvicorn changes how workers receive their sockets.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable

from uvicorn import Config
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

logger = logging.getLogger("uvicorn.error")


def balanced() -> bool:
    """Whether this system spreads connections over sockets that share a port."""
    return sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


class WorkerListener(socket.socket):
    """The supervisor's bound (not listening) socket; unpickled in a worker, a new socket
    bound to the same address with SO_REUSEPORT, which that worker's server listens on."""

    def __reduce__(self) -> tuple[Callable[..., socket.socket], tuple[int, str, int]]:
        host, port = self.getsockname()[:2]
        return bind_shared, (int(self.family), host, port)


def bind_shared(
    family: int, host: str, port: int, kind: type[socket.socket] = socket.socket
) -> socket.socket:
    """A TCP socket bound to (host, port) with SO_REUSEPORT, not yet listening."""
    sock = kind(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def worker_listener(host: str, port: int) -> WorkerListener:
    """Bound in the supervisor: port 0 picks a free port, which every worker then shares."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = bind_shared(family, host, port, WorkerListener)
    assert isinstance(listener, WorkerListener)
    return listener


def run_workers(config: Config) -> None:
    """uvicorn's multiprocess supervisor, each worker listening on a socket of its own."""
    try:
        listener = worker_listener(config.host, config.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%d: %s", config.host, config.port, exc)
        raise SystemExit(STARTUP_FAILURE) from exc  # 3, as uvicorn's own bind failure
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if listener.family == socket.AF_INET6 else host
    logger.info(
        "Uvicorn running on http://%s:%d with %d workers, each listening on its own socket "
        "(SO_REUSEPORT) (Press CTRL+C to quit)",
        shown,
        port,
        config.workers,
    )
    try:
        Multiprocess(config, sockets=[listener]).run()
    finally:
        listener.close()
