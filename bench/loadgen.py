"""A lean HTTP/1.1 keep-alive load generator on raw asyncio protocols (the fallback for wrk).

Each of `--concurrency` connections sends one request, waits for the whole response, and sends
the next, cycling through the requests file (one request a line: `authorization<TAB>json body`,
the format bench/wrk.lua reads). It stops at the deadline, or after every request was sent once
with `--once`, and never runs longer than `--max-seconds`. Prints one JSON object:

    {"requests": 12345, "duration_s": 5.0, "p50_ms": 4.1, "p99_ms": 9.8,
     "statuses": {"200": 12345}, "errors": 0}

    python bench/loadgen.py --port 8000 --requests reqs.tsv --concurrency 16 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

# Counted, so a long run cannot hold an unbounded list of latencies.
MAX_REQUESTS = 5_000_000


def read_requests(path: Path) -> list[tuple[str, str]]:
    """(authorization, body) pairs; authorization is "" for an anonymous request."""
    pairs = []
    for line in path.read_text().splitlines():
        if line:
            authorization, _, body = line.partition("\t")
            pairs.append((authorization, body))
    if not pairs:
        raise SystemExit(f"loadgen: {path} holds no requests")
    return pairs


def encode_request(host: str, port: int, authorization: str, body: str) -> bytes:
    payload = body.encode()
    head = [
        "POST /graphql HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        "Accept: application/json",
        f"Content-Length: {len(payload)}",
    ]
    if authorization:
        head.append(f"Authorization: {authorization}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + payload


class Run:
    """What every connection shares: the requests, the stop rule and the results."""

    def __init__(self, requests: list[bytes], *, deadline: float, once: bool) -> None:
        self.requests = requests
        self.deadline = deadline
        self.once = once
        self.next_index = 0
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.errors = 0
        self.first_sent = 0.0
        self.last_done = 0.0
        self.open_connections = 0
        self.finished = asyncio.get_running_loop().create_future()

    def take(self) -> bytes | None:
        """The next request to send, or None when the run is over for this connection."""
        sent = self.next_index
        if sent >= MAX_REQUESTS or time.perf_counter() >= self.deadline:
            return None
        if self.once and sent >= len(self.requests):
            return None
        self.next_index = sent + 1
        return self.requests[sent % len(self.requests)]

    def connection_done(self) -> None:
        self.open_connections -= 1
        if self.open_connections <= 0 and not self.finished.done():
            self.finished.set_result(None)


class Connection(asyncio.Protocol):
    def __init__(self, run: Run) -> None:
        self.run = run
        run.open_connections += 1
        self.buffer = bytearray()
        self.body_left: int | None = None
        self.status = 0
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCP transport is not an asyncio.Transport subclass, but has its methods.
        self.transport = cast(asyncio.Transport, transport)
        self.send_next()

    def send_next(self) -> None:
        request = self.run.take()
        if request is None or self.transport is None:
            self.close()
            return
        self.sent_at = time.perf_counter()
        if not self.run.first_sent:
            self.run.first_sent = self.sent_at
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while not self.closed:
            if self.body_left is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                if not self.parse_head(bytes(self.buffer[:end])):
                    self.fail()
                    return
                del self.buffer[: end + 4]
            assert self.body_left is not None
            if len(self.buffer) < self.body_left:
                return
            del self.buffer[: self.body_left]
            self.body_left = None
            now = time.perf_counter()
            self.run.latencies.append(now - self.sent_at)
            self.run.statuses[self.status] += 1
            self.run.last_done = now
            self.send_next()

    def parse_head(self, head: bytes) -> bool:
        # uvicorn answers every response of ours with a Content-Length; anything else
        # (chunked, close-delimited) is counted as an error rather than half-parsed.
        lines = head.split(b"\r\n")
        try:
            self.status = int(lines[0].split(b" ", 2)[1])
        except (IndexError, ValueError):
            return False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                self.body_left = int(value.strip())
                return True
        return False

    def fail(self) -> None:
        self.run.errors += 1
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        self.run.connection_done()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            # The server closed the connection while we expected an answer.
            self.run.errors += 1
            self.closed = True
            self.run.connection_done()


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def drive(
    host: str,
    port: int,
    pairs: list[tuple[str, str]],
    *,
    concurrency: int,
    duration: float,
    once: bool,
    max_seconds: float,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    failures: list[str] = []

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A bug in a callback would otherwise leave the run waiting for its time limit.
        failures.append(str(context.get("exception") or context.get("message")))
        if not run.finished.done():
            run.finished.set_result(None)

    loop.set_exception_handler(on_error)
    requests = [encode_request(host, port, auth, body) for auth, body in pairs]
    started = time.perf_counter()
    limit = max_seconds if once else min(duration, max_seconds)
    run = Run(requests, deadline=started + limit, once=once)
    connections = []
    for _ in range(concurrency):
        _, protocol = await loop.create_connection(lambda: Connection(run), host, port)
        connections.append(protocol)
    try:
        # In-flight requests finish after the deadline; give them a bounded grace period.
        await asyncio.wait_for(run.finished, timeout=limit + 30.0)
    except TimeoutError:
        run.errors += sum(1 for c in connections if not c.closed)
        for connection in connections:
            connection.close()
    if failures:
        raise RuntimeError("loadgen failed: " + "; ".join(failures[:3]))
    latencies = sorted(run.latencies)
    done = len(latencies)
    elapsed = (run.last_done - run.first_sent) if done else 0.0
    return {
        "requests": done,
        "duration_s": elapsed,
        "rps": done / elapsed if elapsed > 0 else 0.0,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "statuses": {str(code): n for code, n in sorted(run.statuses.items())},
        "errors": run.errors,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--requests", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--once", action="store_true", help="send each request exactly once")
    parser.add_argument("--max-seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the benchmark only sends traffic to this machine")
    print_result(
        drive(
            args.host,
            args.port,
            read_requests(args.requests),
            concurrency=args.concurrency,
            duration=args.duration,
            once=args.once,
            max_seconds=args.max_seconds,
        )
    )


def print_result(coroutine: Coroutine[Any, Any, dict[str, Any]]) -> None:
    """Run a load generator (on uvloop when installed) and print its result as one JSON line."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    result = uvloop.run(coroutine) if uvloop is not None else asyncio.run(coroutine)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
