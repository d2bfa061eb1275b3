"""An open-loop HTTP/1.1 load generator: requests arrive at a fixed rate, whatever the server does.

A closed-loop generator (bench/loadgen.py, wrk) sends the next request only when an answer came
back, so an overloaded server slows the arrivals down and hides its own overload. Here request
n is due at `start + n / rate`; it goes out on an idle keep-alive connection, or a new one (up
to `--connections`, then it waits in the generator's backlog), and its latency counts from the
moment it was due, so the generator's own delays are not hidden either (its lag behind the
schedule is reported on its own). After `--duration` seconds, one connection sends probes one
at a time every `--probe-interval` seconds for `--probe-seconds`: how soon the server is back to
normal. Prints one JSON object (latencies in ms):

    {"target_rate": 7000, "sent": 210000, "lag_p99_ms": 0.4, "backlog_max": 0,
     "admitted": [...], "refused": [...], "refused_without_retry_after": 0,
     "statuses": {"200": 105000, "503": 105000}, "errors": 0, "unfinished": 0,
     "probes": [[seconds after the burst, latency ms, status], ...]}

    python bench/openloop.py --port 8000 --requests reqs.tsv --rate 7000 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any, cast

from loadgen import encode_request, percentile, print_result, read_requests

TICK_SECONDS = 0.001
GRACE_SECONDS = 15.0


class Answer:
    __slots__ = ("retry_after", "status")

    def __init__(self, status: int, retry_after: bool) -> None:
        self.status = status
        self.retry_after = retry_after


class Connection(asyncio.Protocol):
    """One keep-alive connection: one request at a time; `on_answer` gets each answer."""

    def __init__(self, on_answer: Any, on_lost: Any) -> None:
        self.on_answer = on_answer
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.body_left: int | None = None
        self.answer: Answer | None = None
        self.due = 0.0
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def send(self, request: bytes, due: float) -> None:
        assert self.transport is not None
        self.busy = True
        self.due = due
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.body_left is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self.parse_head(bytes(self.buffer[:end]))
                del self.buffer[: end + 4]
            assert self.body_left is not None
            if len(self.buffer) < self.body_left:
                return
            del self.buffer[: self.body_left]
            self.body_left = None
            answer, self.answer = self.answer, None
            self.busy = False
            self.on_answer(self, answer, time.perf_counter() - self.due)

    def parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        retry_after = False
        self.body_left = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                self.body_left = int(value.strip())
            elif name == b"retry-after":
                retry_after = True
        self.answer = Answer(status, retry_after)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(self)


class Burst:
    def __init__(self, host: str, port: int, requests: list[bytes], max_connections: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self.requests = requests
        self.max_connections = max_connections
        self.idle: deque[Connection] = deque()
        self.open = 0
        self.backlog: deque[tuple[bytes, float]] = deque()
        self.backlog_max = 0
        self.admitted: list[float] = []
        self.refused: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.no_retry_after = 0
        self.errors = 0
        self.in_flight = 0
        self.lags: list[float] = []

    def answered(self, connection: Connection, answer: Answer | None, latency: float) -> None:
        self.in_flight -= 1
        if answer is None:
            self.errors += 1
            return
        self.statuses[answer.status] += 1
        if 200 <= answer.status < 300:
            self.admitted.append(latency * 1000)
        elif answer.status == 503:
            self.refused.append(latency * 1000)
            self.no_retry_after += not answer.retry_after
        if self.backlog:
            request, due = self.backlog.popleft()
            connection.send(request, due)
        else:
            self.idle.append(connection)

    def lost(self, connection: Connection) -> None:
        self.open -= 1
        if connection.busy:
            self.in_flight -= 1
            self.errors += 1
        if connection in self.idle:
            self.idle.remove(connection)

    async def connect(self) -> Connection:
        self.open += 1
        try:
            _, protocol = await self.loop.create_connection(
                lambda: Connection(self.answered, self.lost), self.host, self.port
            )
        except OSError:
            self.open -= 1
            raise
        return protocol

    async def _connect_and_send(self, request: bytes, due: float) -> None:
        try:
            connection = await self.connect()
        except OSError:
            self.in_flight -= 1
            self.errors += 1
            return
        connection.send(request, due)

    def dispatch(self, request: bytes, due: float) -> None:
        self.in_flight += 1
        self.lags.append(time.perf_counter() - due)
        if self.idle:
            self.idle.popleft().send(request, due)
        elif self.open < self.max_connections:
            self.loop.create_task(self._connect_and_send(request, due))
        else:
            self.backlog.append((request, due))
            self.backlog_max = max(self.backlog_max, len(self.backlog))

    async def run(self, rate: float, duration: float) -> float:
        """Send at `rate` for `duration` seconds; returns when the last one was due."""
        for _ in range(min(self.max_connections, 64)):
            self.idle.append(await self.connect())
        start = time.perf_counter()
        total = int(rate * duration)
        sent = 0
        while sent < total:
            due_now = min(total, int((time.perf_counter() - start) * rate) + 1)
            while sent < due_now:
                self.dispatch(self.requests[sent % len(self.requests)], start + sent / rate)
                sent += 1
            await asyncio.sleep(TICK_SECONDS)
        return start + duration


async def probe(
    host: str, port: int, requests: list[bytes], *, after: float, seconds: float, interval: float
) -> list[tuple[float, float, int]]:
    """One request at a time, one every `interval` seconds, from `after` on."""
    loop = asyncio.get_running_loop()
    done: asyncio.Queue[tuple[Answer | None, float]] = asyncio.Queue()
    _, connection = await loop.create_connection(
        lambda: Connection(lambda c, a, lat: done.put_nowait((a, lat)), lambda c: None),
        host,
        port,
    )
    found: list[tuple[float, float, int]] = []
    n = 0
    while time.perf_counter() < after + seconds:
        due = max(time.perf_counter(), after + n * interval)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        connection.send(requests[n % len(requests)], time.perf_counter())
        answer, latency = await asyncio.wait_for(done.get(), timeout=GRACE_SECONDS)
        found.append((due - after, latency * 1000, answer.status if answer else 0))
        n += 1
    return found


async def drive(
    host: str,
    port: int,
    pairs: list[tuple[str, str]],
    *,
    rate: float,
    duration: float,
    connections: int,
    probe_seconds: float,
    probe_interval: float,
) -> dict[str, Any]:
    requests = [encode_request(host, port, auth, body) for auth, body in pairs]
    burst = Burst(host, port, requests, connections)
    ended = time.perf_counter()
    if rate > 0 and duration > 0:
        ended = await burst.run(rate, duration)
    probes = await probe(
        host, port, requests, after=ended, seconds=probe_seconds, interval=probe_interval
    )
    deadline = time.perf_counter() + GRACE_SECONDS
    while burst.in_flight > 0 and time.perf_counter() < deadline:  # noqa: ASYNC110 (polls a count)
        await asyncio.sleep(0.05)
    lags = sorted(burst.lags)
    sent = len(lags)
    return {
        "target_rate": rate,
        "sent": sent,
        "lag_p99_ms": percentile(lags, 0.99) * 1000,
        "lag_max_ms": (lags[-1] * 1000) if lags else 0.0,
        "backlog_max": burst.backlog_max,
        "connections": connections,
        "admitted": burst.admitted,
        "refused": burst.refused,
        "refused_without_retry_after": burst.no_retry_after,
        "statuses": {str(code): n for code, n in sorted(burst.statuses.items())},
        "errors": burst.errors,
        "unfinished": burst.in_flight,
        "probes": probes,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=0.0, help="requests a second (0: probe)")
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--probe-seconds", type=float, default=5.0)
    parser.add_argument("--probe-interval", type=float, default=0.02)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the benchmark only sends traffic to this machine")
    print_result(
        drive(
            args.host,
            args.port,
            read_requests(args.requests),
            rate=args.rate,
            duration=args.duration,
            connections=args.connections,
            probe_seconds=args.probe_seconds,
            probe_interval=args.probe_interval,
        )
    )


if __name__ == "__main__":
    main()
