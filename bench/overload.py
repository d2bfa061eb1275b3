"""Overload: twice the measured capacity for 30 s, and what the server does with it.

`make bench-overload` (BENCH_ARGS=--quick for a 10 s burst). One keyplane server (SQLite,
in-memory rate limits with the raised tiers of bench/run.py, one worker pinned to CPU 0),
seeded through GraphQL with 100 keys; the keyed `viewer` query over the 100 keys throughout.
For each in-flight limit asked for (`--max-in-flight`, KEYPLANE_MAX_IN_FLIGHT), a fresh server:

1. unloaded latency: bench/openloop.py probes, one request at a time (p50);
2. capacity: bench/loadgen.py, closed loop, 16 connections (req/s);
3. the burst: bench/openloop.py, open loop at 2x that capacity for `--burst` seconds, with
   latency counted from when each request was due; then probes for 8 s from the burst's end.

It reports p99 of the admitted (2xx) requests / the unloaded p50 (target ≤ 3); how fast the
refused ones were refused, and whether each 503 carried Retry-After; requests lost from the
keys' usage counts (2xx answers seen by the generator, against the growth of the keys'
`totalRequests`, read back through GraphQL); and the first second after the burst from which
the probes' p50 stays within 1.5x the unloaded p50 (target ≤ 5 s).
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import run
from loadgen import percentile
from run import HOST, Server, bearer, body, log
from seed import Issuer, Seeded, gql, seed

RESULTS = run.BENCH_DIR / "results" / "overload.md"
VIEWER = "{ viewer { kind apiKey { id } } }"
TOTALS = """query($e: ID!) { environment(id: $e) { apiKeys(first: 100) {
  edges { node { totalRequests } } } } }"""
PROBE_SECONDS = 8
RECOVERED = 1.5  # probes' p50 within this multiple of the unloaded p50


def openloop(port: int, path: Path, **options: float) -> dict[str, Any]:
    command = [sys.executable, str(run.BENCH_DIR / "openloop.py"), "--port", str(port)]
    command += ["--requests", str(path)]
    for name, value in options.items():
        command += [f"--{name.replace('_', '-')}", str(value)]
    # Pinned to CPU 1, like every load process.
    output = run._run_bounded(command, timeout=float(options.get("duration", 0)) + 120)
    return dict(json.loads(output.strip().splitlines()[-1]))


def total_requests(port: int, seeded: Seeded) -> int:
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30.0) as client:
        data = gql(client, TOTALS, {"e": seeded.environment_id}, token=seeded.jwt)
    return sum(e["node"]["totalRequests"] for e in data["environment"]["apiKeys"]["edges"])


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def recovery(probes: list[list[float]], unloaded: float) -> float | None:
    """The first whole second after the burst from which every second's probe p50 stays
    within RECOVERED x the unloaded p50 (None: not within the probes)."""
    seconds: dict[int, list[float]] = {}
    for at, latency, _ in probes:
        if at < PROBE_SECONDS:
            seconds.setdefault(int(at), []).append(latency)
    for start in sorted(seconds):  # a second without a probe (one slow answer) is skipped
        if all(p50(v) <= RECOVERED * unloaded for s, v in seconds.items() if s >= start):
            return float(start)
    return None


def one_limit(
    limits: tuple[int, ...], workdir: Path, issuer: Issuer, args: argparse.Namespace
) -> dict[str, Any]:
    in_flight, queued = limits
    limit = f"{in_flight}:{queued}"
    data_dir = workdir / f"data-{in_flight}-{queued}"
    env = run.keyplane_env(data_dir, issuer, run.GENEROUS_LIMITS)
    env["KEYPLANE_MAX_IN_FLIGHT"] = str(in_flight)
    env["KEYPLANE_MAX_QUEUED"] = str(queued)
    port = run.free_port()
    command = [sys.executable, "-m", "keyplane", "serve", "--host", HOST, "--port", str(port)]
    server = Server(
        f"keyplane-{limit}", command, env, port, workdir / f"kp-{limit}.log", "/healthz"
    )
    server.start()
    try:
        seeded = seed(f"http://{HOST}:{port}", issuer, keys=100)
        requests = [(bearer(s), body(VIEWER)) for s in seeded.secrets]
        path = workdir / "viewers.tsv"
        path.write_text("".join(f"{a}\t{b}\n" for a, b in requests))
        run.check(port, requests[:3], frozenset(), server.name)
        run.python_load(port, path, 16, seconds=args.warmup)  # warm-up
        unloaded = openloop(port, path, probe_seconds=args.probe, probe_interval=0.02)
        base = p50([p[1] for p in unloaded["probes"]])
        capacity = run.python_load(port, path, 16, seconds=args.capacity_seconds)
        rate = round(args.factor * capacity.rps)
        time.sleep(2.0)  # the usage flush of everything so far
        before = total_requests(port, seeded)
        log(
            f"limit {limit}: unloaded p50 {base:.2f} ms, capacity {capacity.rps:,.0f} req/s; "
            f"offering {rate:,} req/s for {args.burst:g} s"
        )
        burst = openloop(
            port,
            path,
            rate=rate,
            duration=args.burst,
            probe_seconds=8.0,
            probe_interval=0.02,
            connections=args.connections,
        )
        time.sleep(2.5)  # two usage flushes
        after = total_requests(port, seeded)
    finally:
        server.stop()
    ok = sum(n for code, n in burst["statuses"].items() if code.startswith("2"))
    ok += sum(1 for p in burst["probes"] if 200 <= p[2] < 300)
    admitted = sorted(burst["admitted"])
    refused = sorted(burst["refused"])
    return {
        "limit": limit,
        "unloaded_p50": base,
        "capacity": capacity.rps,
        "rate": rate,
        "burst": burst,
        "admitted_p50": percentile(admitted, 0.5),
        "admitted_p99": percentile(admitted, 0.99),
        "refused_p50": percentile(refused, 0.5),
        "refused_p99": percentile(refused, 0.99),
        "served_rps": len(admitted) / args.burst,
        "counted": after - before,
        "answered_2xx": ok,
        "recovered_after": recovery(burst["probes"], base),
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"# keyplane under overload, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Command: `{' '.join(['python bench/overload.py', *sys.argv[1:]])}`.",
        f"- Machine: {run.cpu_model()}, {os.cpu_count()} CPUs; {run.versions()}.",
        "- keyplane: one uvicorn worker (`keyplane serve`), SQLite, in-memory rate limits "
        "(tiers raised as in bench/run.py), pinned to CPU 0. Query: keyed `viewer` over 100 "
        "keys. Generators on CPU 1: capacity from bench/loadgen.py (closed loop, 16 "
        f"connections, {args.capacity_seconds:g} s); the burst from bench/openloop.py (open "
        f"loop, {args.factor:g}x capacity for {args.burst:g} s, up to {args.connections} "
        "connections, latency from each request's due time); probes one at a time every "
        "20 ms before (unloaded) and for 8 s after the burst.",
        "- The machine is shared with other work: latencies move between runs; the ratios "
        "are what to read, and the load average is given at the end.",
        "",
        "| KEYPLANE_MAX_IN_FLIGHT : MAX_QUEUED | capacity req/s | offered req/s | served req/s "
        "| admitted p99 / unloaded p50 (≤ 3) | refused: share, p99 ms, without Retry-After "
        "| lost from usage counts | back to normal after (≤ 5 s) | generator lag p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r["burst"]
        ratio = r["admitted_p99"] / r["unloaded_p50"]
        refused = len(b["refused"])
        share = refused / max(1, b["sent"])
        lost = r["answered_2xx"] - r["counted"]
        back = r["recovered_after"]
        others = {c: n for c, n in b["statuses"].items() if not c.startswith(("2", "503"))}
        extra = f"; other statuses {others}" if others else ""
        if b["errors"] or b["unfinished"]:
            extra += f"; {b['errors']} errors, {b['unfinished']} unanswered"
        cells = [
            r["limit"],
            f"{r['capacity']:,.0f}",
            f"{r['rate']:,} ({b['sent']:,} sent)",
            f"{r['served_rps']:,.0f}",
            f"{r['admitted_p99']:.1f} / {r['unloaded_p50']:.2f} ms = **{ratio:.1f}** "
            f"({'met' if ratio <= 3 else 'missed'}; admitted p50 {r['admitted_p50']:.1f} ms)",
            f"{share:.0%}, {r['refused_p99']:.1f} ms, {b['refused_without_retry_after']}{extra}",
            f"**{lost}** ({r['answered_2xx']:,} 2xx seen, {r['counted']:,} counted)",
            "not within 8 s" if back is None else f"**{back:g} s**",
            f"{b['lag_p99_ms']:.2f} (max {b['lag_max_ms']:.1f}; backlog max {b['backlog_max']})",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Probe p50 per second after the burst (ms), by limit: "
        + "; ".join(
            f"{r['limit']}: "
            + ", ".join(
                f"{p50([p[1] for p in r['burst']['probes'] if int(p[0]) == s]):.1f}"
                for s in range(8)
            )
            for r in results
        )
        + ".",
        "",
        f"- Load average at the end: {os.getloadavg()[0]:.2f}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limits",
        default="8:128",
        help="KEYPLANE_MAX_IN_FLIGHT:KEYPLANE_MAX_QUEUED pairs to try, comma-separated",
    )
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--burst", type=float, default=30.0, help="seconds of overload")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--probe", type=float, default=5.0, help="seconds of unloaded probes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="a 10 s burst")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.burst, args.capacity_seconds, args.probe = 10.0, 3.0, 3.0
    limits = [tuple(map(int, x.split(":"))) for x in args.limits.split(",") if x.strip()]
    signal.signal(signal.SIGTERM, run._raise_interrupt)
    signal.signal(signal.SIGINT, run._raise_interrupt)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {run.LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="keyplane-overload-"))
    try:
        issuer = Issuer.create(workdir / "jwks.json")
        results = [one_limit(limit, workdir, issuer, args) for limit in limits]
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
