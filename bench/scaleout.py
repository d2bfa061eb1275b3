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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
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


async def _flush_redis(url: str) -> None:
    import redis.asyncio as redis

    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()


def run_setup(setup: Setup, args: argparse.Namespace, workdir: Path) -> list[Figures]:
    data_dir = workdir / "".join(c if c.isalnum() else "-" for c in setup.name)
    data_dir.mkdir(parents=True)
    issuer = Issuer.create(data_dir / "jwks.json")
    env = keyplane_env(data_dir, issuer, TIER)
    env["KEYPLANE_RATE_LIMIT_STORAGE"] = setup.storage
    database = f"keyplane_scaleout_{uuid.uuid4().hex[:8]}"
    if setup.database == "postgres":
        env["KEYPLANE_DATABASE_URL"] = asyncio.run(_fresh_postgres(args.postgres, database))
    if setup.storage.startswith("redis"):
        asyncio.run(_flush_redis(setup.storage))
    if args.src:
        env["PYTHONPATH"] = args.src
    port = free_port()
    command = [sys.executable, "-m", "keyplane", "serve", "--host", HOST, "--port", str(port)]
    command += ["--workers", str(setup.workers)]
    log = data_dir / "server.log"
    with log.open("ab") as out:
        process = spawn(command, cpu=None, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{setup.name} did not start:\n{log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{port}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.2)
        seeded = seed(f"http://{HOST}:{port}", issuer, keys=KEYS)
        requests = [(f"Bearer {secret}", body(VIEWER_KEY)) for secret in seeded.secrets]
        load = LoadGenerator(args.load, args.concurrency, data_dir)
        load.run(port, requests, args.warmup)
        figures = []
        for _ in range(args.repeat):
            before = cpu_seconds(process.pid)
            measured: Measurement = load.run(port, requests, args.duration)
            used = cpu_seconds(process.pid) - before
            if measured.non_2xx or measured.errors:
                raise RuntimeError(f"{setup.name}: {measured.non_2xx} non-2xx, {measured.errors}")
            figures.append(
                Figures(1000 * used / measured.requests, measured.rps, measured.requests)
            )
        return figures
    finally:
        stop(process)
        if setup.database == "postgres":
            asyncio.run(_drop_postgres(args.postgres, database))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--src", default="", help="serve this src directory's keyplane instead")
    parser.add_argument("--load", choices=["wrk", "python"], default="")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--repeat", type=int, default=3)
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
    results: dict[str, list[Figures]] = {}
    with tempfile.TemporaryDirectory(prefix="keyplane-scaleout-") as scratch:
        try:
            for setup in setups:
                print(f"# {setup.name} ...", file=sys.stderr, flush=True)
                results[setup.name] = run_setup(setup, args, Path(scratch))
        finally:
            stop_all()
    medians = {
        name: (
            statistics.median(f.cpu_ms for f in figures),
            statistics.median(f.rps for f in figures),
        )
        for name, figures in results.items()
    }
    base_cpu, base_rps = medians[setups[0].name]
    one_cpu, one_rps = medians[setups[1].name]
    _, two_rps = medians[setups[2].name]
    print(
        f"`{' '.join(['python', *sys.argv])}` ({args.load}, {args.concurrency} connections, "
        f"{args.repeat} x {args.duration:g} s, medians)"
    )
    print()
    print("| setup | server CPU ms/request | requests/s |")
    print("|---|---|---|")
    for name, (cpu, rps) in medians.items():
        print(f"| {name} | {cpu:.3f} | {rps:,.0f} |")
    print()
    print(
        f"- CPU per request, PG+Redis / SQLite+memory: **{one_cpu / base_cpu:.2f}x**"
        " (target <= 1.25)"
    )
    print(f"- throughput, PG+Redis / SQLite+memory: **{one_rps / base_rps:.2f}x** (target >= 0.8)")
    print(
        f"- throughput, 2 workers / 1 worker on PG+Redis: **{two_rps / one_rps:.2f}x**"
        " (target >= 1.3)"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
