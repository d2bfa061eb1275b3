"""Scale-out: the keyed viewer on one worker with SQLite + in-memory limits, on one worker with
PostgreSQL + Redis, and on two workers with PostgreSQL + Redis, side by side in one run.

The primary figure is the server's CPU per request: utime + stime of the server process and
its workers (from /proc, bench/run.py `cpu_seconds`) over the measured run, divided by the
requests it answered. Throughput is reported beside it. The load generator, PostgreSQL and
Redis share the machine's cores with the server (nothing is pinned), so throughput ratios
understate what free cores would give; CPU per request does not depend on that.

The keys: 100, rotating, on an api_key tier of 1,000,000/minute, so each Redis window holds
about a minute of traffic. Any non-2xx answer fails the run.

    .venv/bin/python bench/scaleout.py                          # 3 x 8 s per setup
    .venv/bin/python bench/scaleout.py --src /path/to/other/src # another version's server code
    .venv/bin/python bench/scaleout.py --against /path/to/main/src  # ours and main's, side by side

Each setup's servers (one per side with --against) run on fresh PostgreSQL databases and a
flushed Redis database (--redis: give it one that nothing else uses); both sides are started,
seeded and warmed, then their measured runs alternate, so that a change in the machine's load
falls on both. The report gives the load average and, on PostgreSQL, the transactions
committed a request (the usage flush: a kept key reads nothing from PostgreSQL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
from run import (
    HOST,
    READY_TIMEOUT,
    VIEWER_KEY,
    LoadGenerator,
    Measurement,
    body,
    cpu_seconds,
    descendants,
    free_port,
    keyplane_env,
    spawn,
    stop,
    stop_all,
)
from seed import Issuer, seed

TIER = "api_key=1000000/minute;oauth=1000000/minute;jwt=1000000/minute;anonymous=1000000/minute"
KEYS = 100


@dataclass
class Setup:
    name: str
    database: str  # "sqlite" or "postgres"
    storage: str  # "memory://" or a Redis URL
    workers: int


@dataclass
class Figures:
    cpu_ms: float  # server CPU per request
    rps: float
    requests: int
    # PostgreSQL transactions committed in the server's database over the run, a request
    # (the usage flush, once a second a worker; a kept key reads nothing): None on SQLite.
    pg_transactions: float | None = None
    # Redis's own CPU (INFO cpu: the whole server, user + system) over the run, in ms a
    # request: None without Redis. Redis is single-threaded and shares the two cores.
    redis_cpu_ms: float | None = None
    # With several workers: the load generator's connections each worker held halfway
    # through the run, fewest first (from /proc: a lopsided split caps what a second worker adds).
    connections: list[int] | None = None


async def _fresh_postgres(base: str, name: str) -> str:
    import asyncpg

    connection = await asyncpg.connect(f"{base}/postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return f"{base}/{name}"


async def _drop_postgres(base: str, name: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(f"{base}/postgres")
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def _transactions(base: str, name: str) -> int:
    """Transactions committed in database `name` so far (pg_stat_database; PostgreSQL updates
    it within about a second, so a run's figure counts the flushes of about that run)."""
    import asyncpg

    connection = await asyncpg.connect(f"{base}/postgres")
    try:
        value = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1", name
        )
    finally:
        await connection.close()
    return int(value or 0)


async def _redis_cpu_seconds(url: str) -> float:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    try:
        info = await client.info("cpu")
    finally:
        await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def _flush_redis(url: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


@dataclass
class Server:
    """One side's `keyplane serve` for one setup, seeded and warm."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    requests: list[tuple[str, str]]
    load: LoadGenerator
    database: str  # its PostgreSQL database, or ""
    redis: str  # its Redis URL, or ""
    workers: int


def start_server(setup: Setup, args: argparse.Namespace, workdir: Path, src: str) -> Server:
    data_dir = workdir / "".join(c if c.isalnum() else "-" for c in setup.name)
    data_dir.mkdir(parents=True)
    issuer = Issuer.create(data_dir / "jwks.json")
    env = keyplane_env(data_dir, issuer, TIER)
    env["KEYPLANE_RATE_LIMIT_STORAGE"] = setup.storage
    database = ""
    if setup.database == "postgres":
        database = f"keyplane_scaleout_{uuid.uuid4().hex[:8]}"
        env["KEYPLANE_DATABASE_URL"] = asyncio.run(_fresh_postgres(args.postgres, database))
    if src:
        env["PYTHONPATH"] = src
    port = free_port()
    command = [sys.executable, "-m", "keyplane", "serve", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(setup.workers)]
    log = data_dir / "server.log"
    with log.open("ab") as out:
        process = spawn(command, cpu=None, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(
        setup.name,
        process,
        port,
        [],
        LoadGenerator(args.load, args.concurrency, data_dir),
        database,
        setup.storage if setup.storage.startswith("redis") else "",
        setup.workers,
    )
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{setup.name} did not start:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200:
                break
        time.sleep(0.2)
    seeded = seed(f"http://{HOST}:{port}", issuer, keys=KEYS)
    server.requests = [(f"Bearer {secret}", body(VIEWER_KEY)) for secret in seeded.secrets]
    server.load.run(port, server.requests, args.warmup)
    return server


def measure(server: Server, args: argparse.Namespace) -> Figures:
    commits = asyncio.run(_transactions(args.postgres, server.database)) if server.database else 0
    redis_before = asyncio.run(_redis_cpu_seconds(server.redis)) if server.redis else 0.0
    spread: list[list[int]] = []
    sampler = None
    if server.workers > 1:
        sampler = threading.Timer(
            args.duration / 2,
            lambda: spread.append(connections_by_worker(server.process.pid, server.port)),
        )
        sampler.start()
    before = cpu_seconds(server.process.pid)
    measured: Measurement = server.load.run(server.port, server.requests, args.duration)
    if sampler is not None:
        sampler.join()
    used = cpu_seconds(server.process.pid) - before
    redis_used = asyncio.run(_redis_cpu_seconds(server.redis)) - redis_before if server.redis else 0
    if server.database:
        commits = asyncio.run(_transactions(args.postgres, server.database)) - commits
    if measured.non_2xx or measured.errors:
        raise RuntimeError(f"{server.name}: {measured.non_2xx} non-2xx, {measured.errors}")
    return Figures(
        1000 * used / measured.requests,
        measured.rps,
        measured.requests,
        commits / measured.requests if server.database else None,
        1000 * redis_used / measured.requests if server.redis else None,
        spread[0] if spread else None,
    )


def connections_by_worker(supervisor: int, port: int) -> list[int]:
    """Established connections on `port` held by each process under `supervisor` that holds
    any, fewest first (Linux /proc: each process's socket inodes, matched in /proc/net/tcp*)."""
    established = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    established.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in descendants(supervisor):
        held = 0
        with contextlib.suppress(OSError):
            for fd in os.scandir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    held += os.readlink(fd.path) in established
        if held:
            counts.append(held)
    return sorted(counts)


def run_setup(
    setup: Setup, args: argparse.Namespace, workdir: Path, sources: dict[str, str]
) -> dict[str, list[Figures]]:
    """Each side's server started, seeded and warmed, then their measured runs alternated
    (one side's run, the other's, and again), so that a change in the machine's load falls on
    both sides alike. They share the Redis database (their keys differ)."""
    if setup.storage.startswith("redis"):
        asyncio.run(_flush_redis(setup.storage))
    servers: dict[str, Server] = {}
    try:
        for side, src in sources.items():
            side_dir = workdir / side
            side_dir.mkdir(exist_ok=True)
            servers[side] = start_server(setup, args, side_dir, src)
        figures: dict[str, list[Figures]] = {side: [] for side in sources}
        for _ in range(args.repeat):
            for side, server in servers.items():
                figures[side].append(measure(server, args))
        return figures
    finally:
        for server in servers.values():
            stop(server.process)
            if server.database:
                asyncio.run(_drop_postgres(args.postgres, server.database))


def _ratios(medians: dict[str, tuple[float, float]], setups: list[Setup]) -> dict[str, float]:
    base_cpu, base_rps = medians[setups[0].name]
    one_cpu, one_rps = medians[setups[1].name]
    _, two_rps = medians[setups[2].name]
    return {
        "cpu_pg_redis_over_sqlite_memory": one_cpu / base_cpu,
        "rps_pg_redis_over_sqlite_memory": one_rps / base_rps,
        "rps_two_workers_over_one": two_rps / one_rps,
    }


TARGETS = {
    "cpu_pg_redis_over_sqlite_memory": ("CPU per request, PG+Redis / SQLite+memory", "<= 1.25"),
    "rps_pg_redis_over_sqlite_memory": ("throughput, PG+Redis / SQLite+memory", ">= 0.8"),
    "rps_two_workers_over_one": ("throughput, 2 workers / 1 worker on PG+Redis", ">= 1.3"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--src", default="", help="serve this src directory's keyplane instead")
    parser.add_argument(
        "--against",
        default="",
        help="also serve this src directory's keyplane, each setup right after ours, and "
        "report both side by side (e.g. a worktree of main)",
    )
    parser.add_argument("--load", choices=["wrk", "python"], default="")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--output", type=Path, help="also write the table (markdown) here")
    parser.add_argument("--json", type=Path, help="write the figures (JSON) here")
    args = parser.parse_args()
    if not args.load:
        args.load = (
            "wrk"
            if subprocess.run(["which", "wrk"], capture_output=True).returncode == 0
            else "python"
        )
    setups = [
        Setup("1 worker, SQLite + memory", "sqlite", "memory://", 1),
        Setup("1 worker, PostgreSQL + Redis", "postgres", args.redis, 1),
        Setup("2 workers, PostgreSQL + Redis", "postgres", args.redis, 2),
    ]
    sources = {"this": args.src} | ({"against": args.against} if args.against else {})
    results: dict[str, dict[str, list[Figures]]] = {side: {} for side in sources}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="keyplane-scaleout-") as scratch:
        try:
            for setup in setups:
                print(f"# {setup.name} ...", file=sys.stderr, flush=True)
                by_side = run_setup(setup, args, Path(scratch), sources)
                for side, figures in by_side.items():
                    results[side][setup.name] = figures
        finally:
            stop_all()
    load_after = os.getloadavg()
    medians = {
        side: {
            name: (
                statistics.median(f.cpu_ms for f in figures),
                statistics.median(f.rps for f in figures),
            )
            for name, figures in by_setup.items()
        }
        for side, by_setup in results.items()
    }
    ratios = {side: _ratios(medians[side], setups) for side in sources}
    lines = [
        f"`{' '.join(['python', *sys.argv])}` ({args.load}, {args.concurrency} connections, "
        f"{args.repeat} x {args.duration:g} s, medians; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after)",
        "",
    ]
    sides = list(sources)
    header = " | ".join(f"{side}: server CPU ms/request | {side}: requests/s" for side in sides)
    lines += [f"| setup | {header} |", "|---|" + "---|---|" * len(sides)]
    for setup in setups:
        cells = " | ".join(
            f"{medians[side][setup.name][0]:.3f} | {medians[side][setup.name][1]:,.0f}"
            for side in sides
        )
        lines.append(f"| {setup.name} | {cells} |")
    lines.append("")
    for key, (label, target) in TARGETS.items():
        figures = ", ".join(f"{side} **{ratios[side][key]:.2f}x**" for side in sides)
        lines.append(f"- {label}: {figures} (target {target})")
    for side in sides:
        per_request = [
            f.pg_transactions
            for figures in results[side].values()
            for f in figures
            if f.pg_transactions is not None
        ]
        lines.append(
            f"- {side}: PostgreSQL transactions a request, fewest in a run "
            f"{min(per_request):.4f}, median {statistics.median(per_request):.4f} (the usage "
            "flush, about one a second a worker: a kept key reads nothing; pg_stat_database "
            "lags by up to 10 s and counts autovacuum, so some runs count more)"
        )
    for side in sides:
        redis_cpu = {
            name: statistics.median(f.redis_cpu_ms for f in figures if f.redis_cpu_ms is not None)
            for name, figures in results[side].items()
            if any(f.redis_cpu_ms is not None for f in figures)
        }
        lines.append(
            f"- {side}: Redis CPU a request (ms, medians; the whole Redis server): "
            + ", ".join(f"{name} {value:.4f}" for name, value in redis_cpu.items())
        )
    for side in sides:
        spreads = [
            "/".join(map(str, f.connections))
            for figures in results[side].values()
            for f in figures
            if f.connections
        ]
        if spreads:
            lines.append(
                f"- {side}: the load generator's connections by worker, halfway through each "
                f"2-worker run: {', '.join(spreads)}"
            )
    report = "\n".join(lines) + "\n"
    print(report, end="")
    if args.output:
        args.output.write_text(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": ["python", *sys.argv],
                    "load": args.load,
                    "concurrency": args.concurrency,
                    "load_average": [load_before[0], load_after[0]],
                    "sides": {
                        side: {
                            "src": sources[side],
                            "setups": {
                                name: [vars(f) for f in figures]
                                for name, figures in results[side].items()
                            },
                            "ratios": ratios[side],
                        }
                        for side in sides
                    },
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
