"""A million keys: what a keyed request, a key page and memory cost as the key table grows.

`make bench-scale` (BENCH_ARGS=--quick for a short run). Two keyplane servers (SQLite in a
temporary data dir, in-memory rate limits, pinned to CPU 0, loaded one at a time from CPU 1,
as in bench/run.py), each seeded through GraphQL with an account, a project and environments,
then stopped and filled straight in the database by bench/seed_many.py:

- small: 1,000 keys (100 the bench sends, in "Production", and 900 more);
- large: 1,000,000 keys (the same 100, 100,000 in "Scale", the rest in "Churn").

The bench's keys carry GENERATE_DOCUMENTS and MANAGE_PROJECT and rateLimitPerMinute 10,000.
It reports, each as a ratio measured side by side in one run:

1. a keyed `viewer` over 100 rotating keys: server CPU per request (user + system time from
   /proc over many requests) at 1,000 keys / at 1,000,000 (target ≥ 0.95);
2. the first page of 20 keys (`createdBy { id email }` selected), listed by a MANAGE_PROJECT
   key of its environment: server CPU per request of a 100-key environment / of a
   100,000-key one, both on the large server (target ≥ 0.90);
3. a fresh large server's resident memory after 100,000 distinct keys each made one request
   (VmRSS and VmHWM from /proc; target ≤ 200 MB).

    .venv/bin/python bench/scale.py             # 3 x 4 s per side, 100,000 keys for memory
    .venv/bin/python bench/scale.py --quick     # 1 x 2 s, 10,000 keys for memory
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import run
from reference import KEY_PAGE
from run import HOST, LoadGenerator, Measurement, Request, Server, bearer, body, log
from seed import Issuer, Seeded, seed
from seed_many import Batch, seed_many

from keyplane.permissions.scopes import Scope

RESULTS = run.BENCH_DIR / "results" / "scale.md"
BENCH_KEYS = 100
BENCH_SCOPES = frozenset({Scope.GENERATE_DOCUMENTS, Scope.MANAGE_PROJECT})
KEY_LIMIT = 10_000  # rateLimitPerMinute of every key the bench sends
PAGE = 20


@dataclass
class Side:
    name: str
    server: Server
    seeded: Seeded
    secrets: dict[str, list[str]]
    seconds: float  # spent seeding straight into the database
    keys: int


def prepare(
    name: str, workdir: Path, issuer: Issuer, *, keys: int, page_keys: int, rss_keys: int
) -> Side:
    """A migrated database with an account and environments (through GraphQL), then `keys`
    keys written straight into it; the server is left stopped."""
    data_dir = workdir / name
    env = run.keyplane_env(data_dir, issuer, run.GENEROUS_LIMITS)
    port = run.free_port()
    command = [sys.executable, "-m", "keyplane", "serve", "--host", HOST, "--port", str(port)]
    server = Server(name, command, env, port, workdir / f"{name}.log", "/healthz")
    server.start()
    seeded = seed(f"http://{HOST}:{port}", issuer, keys=0)
    server.stop()
    batches = [
        Batch(seeded.environment_id, BENCH_KEYS, BENCH_KEYS, BENCH_SCOPES, KEY_LIMIT),
    ]
    rest = keys - BENCH_KEYS
    if page_keys:
        usable = max(rss_keys, BENCH_KEYS)
        batches.append(
            Batch(seeded.scale_environment_id, page_keys, usable, BENCH_SCOPES, KEY_LIMIT)
        )
        rest -= page_keys
    if rest > 0:
        batches.append(Batch(seeded.churn_environment_id, rest))
    log(f"{name}: writing {keys:,} keys straight into SQLite")
    secrets, seconds = seed_many(
        data_dir / "keyplane.sqlite3",
        project_id=seeded.project_id,
        user_id=seeded.user_id,
        batches=batches,
    )
    log(f"{name}: {keys:,} keys in {seconds:.1f} s")
    return Side(name, server, seeded, secrets, seconds, keys)


def viewers(secrets: list[str]) -> list[Request]:
    return [(bearer(s), body("{ viewer { kind apiKey { id } } }")) for s in secrets]


def pages(secrets: list[str], environment_id: str) -> list[Request]:
    return [(bearer(s), body(KEY_PAGE % PAGE, {"e": environment_id})) for s in secrets]


def compare(
    first: tuple[Server, list[Request]],
    second: tuple[Server, list[Request]],
    load: LoadGenerator,
    *,
    warmup: float,
    duration: float,
    repeat: int,
) -> tuple[list[Measurement], list[Measurement]]:
    """Alternating runs of two (server, requests) sides, as bench/run.py does."""
    results: tuple[list[Measurement], list[Measurement]] = ([], [])
    sides = [(*first, results[0]), (*second, results[1])]
    for server, requests, _ in sides:
        run.check(server.port, requests[:5], frozenset(), server.name)
        if warmup > 0:
            load.run(server.port, requests, warmup)
    for rep in range(repeat):
        for server, requests, out in sides if rep % 2 == 0 else sides[::-1]:
            out.append(run.measure(server, load, requests, duration))
    return results


def med(results: list[Measurement], name: str) -> float:
    return statistics.median(getattr(m, name) for m in results)


def row(label: str, a: list[Measurement], b: list[Measurement], target: float) -> str:
    """Cost ratio: CPU per request of `a` over that of `b` (≥ target: b costs little more)."""
    ratio = med(a, "cpu_us") / med(b, "cpu_us")
    pairs = [x.cpu_us / y.cpu_us for x, y in zip(a, b, strict=True) if y.cpu_us]
    spread = f" (runs {min(pairs):.2f} to {max(pairs):.2f})" if len(pairs) > 1 else ""
    mark = "met" if ratio >= target else "missed"
    cells = [
        label,
        f"{med(a, 'cpu_us'):,.0f} / {med(b, 'cpu_us'):,.0f} = **{ratio:.2f}**{spread}",
        f"{med(a, 'rps'):,.0f} / {med(b, 'rps'):,.0f} = {med(a, 'rps') / med(b, 'rps'):.2f}",
        f"{med(a, 'p50_ms'):.2f} / {med(b, 'p50_ms'):.2f}",
        f"≥ {target:.2f}: {mark}",
    ]
    bad = sum(m.non_2xx + m.errors for m in a + b)
    if bad:
        cells[-1] += f" (**{bad} non-2xx or errors**)"
    return "| " + " | ".join(cells) + " |"


def once_each(port: int, path: Path, concurrency: int) -> Measurement:
    """bench/loadgen.py --once, allowed up to 30 minutes (run.python_load stops at 5: on a
    busy machine 100,000 requests can take longer)."""
    command = [sys.executable, str(run.BENCH_DIR / "loadgen.py"), "--host", HOST]
    command += ["--port", str(port), "--requests", str(path), "--concurrency", str(concurrency)]
    command += ["--once", "--max-seconds", "1800"]
    result = json.loads(run._run_bounded(command, timeout=1900).strip().splitlines()[-1])
    return Measurement(
        requests=result["requests"],
        rps=result["rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        non_2xx=sum(n for code, n in result["statuses"].items() if not code.startswith("2")),
        errors=result["errors"],
    )


def memory(side: Side, secrets: list[str], concurrency: int) -> list[str]:
    """A fresh server, then each of `secrets` makes one request."""
    server = side.server
    server.start()
    run.check(server.port, [("", body("{ __typename }"))], frozenset(), server.name)
    idle = run.rss_mb(server.pid)
    path = server.log.parent / "memory.tsv"
    path.write_text("".join(f"{a}\t{b}\n" for a, b in viewers(secrets)))
    result = once_each(server.port, path, concurrency)
    time.sleep(2.0)  # a usage flush of the last keys
    rss, peak = run.rss_mb(server.pid), run.peak_rss_mb(server.pid)
    server.stop()
    ok = result.requests == len(secrets) and not result.non_2xx and not result.errors
    mark = "met" if peak <= 200 else "missed"
    return [
        f"**Memory: a fresh server on {side.keys:,} keys held {idle:.1f} MB idle; after "
        f"{len(secrets):,} distinct keys each made one request it held {rss:.1f} MB (VmRSS), "
        f"peak {peak:.1f} MB (VmHWM over the process's life; target ≤ 200 MB: {mark}).** "
        f"{result.requests:,} requests at {result.rps:,.0f} req/s"
        + (
            ""
            if ok
            else f"; **only {result.requests:,} of {len(secrets):,} sent, "
            f"{result.non_2xx:,} non-2xx, {result.errors:,} errors**"
        )
        + "."
    ]


def bench(args: argparse.Namespace, workdir: Path) -> str:
    issuer = Issuer.create(workdir / "jwks.json")
    small = prepare("small", workdir, issuer, keys=args.small, page_keys=0, rss_keys=0)
    large = prepare(
        "large", workdir, issuer, keys=args.keys, page_keys=args.page_keys, rss_keys=args.rss_keys
    )
    load = LoadGenerator("python", args.concurrency, workdir)
    small.server.start()
    large.server.start()
    timing = {"warmup": args.warmup, "duration": args.duration, "repeat": args.repeat}
    log(f"keyed viewer at {small.keys:,} and at {large.keys:,} keys")
    few, many = compare(
        (small.server, viewers(small.secrets[small.seeded.environment_id])),
        (large.server, viewers(large.secrets[large.seeded.environment_id])),
        load,
        **timing,
    )
    small.server.stop()
    log(f"first page of {PAGE} keys: a {BENCH_KEYS}-key and a {args.page_keys:,}-key environment")
    production = large.seeded.environment_id
    scale = large.seeded.scale_environment_id
    short, long = compare(
        (large.server, pages(large.secrets[production], production)),
        (large.server, pages(large.secrets[scale][:BENCH_KEYS], scale)),
        load,
        **timing,
    )
    large.server.stop()
    log(f"memory: {args.rss_keys:,} distinct keys, one request each")
    memory_note = memory(large, large.secrets[scale][: args.rss_keys], args.concurrency)
    return "\n".join(
        [
            f"# keyplane at scale, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            "",
            f"- Command: `{' '.join(['python bench/scale.py', *sys.argv[1:]])}`.",
            f"- Machine: {run.cpu_model()}, {os.cpu_count()} CPUs; {run.versions()}.",
            "- keyplane: one uvicorn worker (`keyplane serve`), SQLite, in-memory rate limits "
            "(raised tiers as in bench/run.py; each bench key overridden to 10,000/minute, "
            "scopes GENERATE_DOCUMENTS and MANAGE_PROJECT), pinned to CPU 0; load "
            f"{load.describe()} on CPU 1, {args.repeat} x {args.duration:g} s per side, "
            "alternating, medians.",
            f"- Keys written straight into SQLite (bench/seed_many.py, one transaction): "
            f"{small.keys:,} in {small.seconds:.1f} s, {large.keys:,} in {large.seconds:.1f} s.",
            "- Figure: server CPU per request (user + system time of the server process from "
            "/proc/PID/stat over a run, divided by its requests); a ratio ≥ target means the "
            "larger table costs at most that much more. req/s and p50 beside it. The machine "
            "is shared: expect a few percent of noise (the run spread shows it).",
            "",
            "| comparison | CPU µs/req (ratio) | req/s | p50 ms | target |",
            "|---|---|---|---|---|",
            row(
                f"keyed viewer, 100 rotating keys: {small.keys:,} keys / {large.keys:,} keys",
                few,
                many,
                0.95,
            ),
            row(
                f"first page of {PAGE} keys (with createdBy), by a MANAGE_PROJECT key, on "
                f"{large.keys:,} keys: {BENCH_KEYS}-key env / {args.page_keys:,}-key env",
                short,
                long,
                0.90,
            ),
            "",
            *memory_note,
            "",
            f"- Load average at the end: {os.getloadavg()[0]:.2f}.",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys of the large table")
    parser.add_argument("--small", type=int, default=1_000, help="keys of the small table")
    parser.add_argument("--page-keys", type=int, default=100_000, help="keys of the big env")
    parser.add_argument("--rss-keys", type=int, default=100_000, help="keys for memory")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--quick", action="store_true", help="1 x 2 s; 10,000 keys for memory")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 2.0, 1.0
        args.rss_keys = min(args.rss_keys, 10_000)
    if not BENCH_KEYS <= args.rss_keys <= args.page_keys:
        parser.error(f"need {BENCH_KEYS} <= --rss-keys <= --page-keys")
    if not BENCH_KEYS < args.small and args.page_keys + BENCH_KEYS <= args.keys:
        parser.error("need --small > 100 and --keys >= --page-keys + 100")
    signal.signal(signal.SIGTERM, run._raise_interrupt)
    signal.signal(signal.SIGINT, run._raise_interrupt)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {run.LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="keyplane-scale-"))
    try:
        report = bench(args, workdir)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
