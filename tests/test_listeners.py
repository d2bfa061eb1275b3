"""`keyplane serve --workers N` on Linux: each worker listens on a socket of its own (listeners.py).

The supervisor binds the address; what it hands a worker (pickled, as uvicorn's Multiprocess
does) becomes a new socket bound to the same address, and the kernel spreads connections over
those sockets. tests/test_serve.py checks the same through real `keyplane serve` processes.
"""

from __future__ import annotations

import pickle
import socket
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import pytest

from keyplane.listeners import WorkerListener, balanced, worker_listener
from tests.serve_process import refused_start

pytestmark = pytest.mark.skipif(not balanced(), reason="SO_REUSEPORT balancing is Linux's")


def _as_a_worker_gets_it(listener: WorkerListener) -> socket.socket:
    """What a spawned worker unpickles: uvicorn's Multiprocess pickles its sockets this way."""
    unpickled = pickle.loads(bytes(ForkingPickler.dumps(listener)))
    assert isinstance(unpickled, socket.socket)
    return unpickled


def _accept_all(server: socket.socket) -> list[socket.socket]:
    server.setblocking(False)
    accepted = []
    while True:
        try:
            accepted.append(server.accept()[0])
        except BlockingIOError:
            return accepted


def test_each_worker_gets_a_socket_of_its_own_on_the_supervisors_address() -> None:
    # given: the supervisor's socket, on a port the kernel picks
    with worker_listener("127.0.0.1", 0) as listener:
        # when: two workers start
        first, second = _as_a_worker_gets_it(listener), _as_a_worker_gets_it(listener)

        # then: each has a new socket on the same address, and both can listen on it
        with first, second:
            assert not isinstance(first, WorkerListener)
            assert len({listener.fileno(), first.fileno(), second.fileno()}) == 3
            assert first.getsockname() == second.getsockname() == listener.getsockname()
            first.listen()
            second.listen()


def test_the_kernel_spreads_connections_over_the_workers_sockets() -> None:
    # given: two workers listening, as `keyplane serve --workers 2` runs them
    with worker_listener("127.0.0.1", 0) as listener:
        first, second = _as_a_worker_gets_it(listener), _as_a_worker_gets_it(listener)
        first.listen(64)
        second.listen(64)
        address = listener.getsockname()

        # when: a client opens 40 connections at once (a pool, wrk)
        clients = [socket.create_connection(address) for _ in range(40)]
        try:
            accepted = [_accept_all(first), _accept_all(second)]

            # then: every connection reached a worker, and each worker has its share (by a hash
            # of the connections' addresses: fewer than 5 of 40 on one side is about 1 in 10^7)
            assert sum(len(each) for each in accepted) == 40
            assert min(len(each) for each in accepted) >= 5
        finally:
            for sock in [*clients, *accepted[0], *accepted[1], first, second]:
                sock.close()


def test_a_port_in_use_stops_the_server_before_any_worker_starts(tmp_path: Path) -> None:
    # given: a port another program listens on
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        # when
        completed = refused_start(
            tmp_path,
            *("--workers", "2", "--port", str(port)),
            # never contacted: the server stops before any worker starts
            KEYPLANE_RATE_LIMIT_STORAGE="redis://127.0.0.1:1/0",
        )

    # then: uvicorn's exit status for a failed start-up, and the reason
    assert completed.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in completed.stderr
    assert "Started server process" not in completed.stderr
