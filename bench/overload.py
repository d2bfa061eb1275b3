"""Overload: twice the measured capacity for 30 s, and what the server does with it.

`make bench-overload` (BENCH_ARGS=--quick for a 10 s burst). One keyplane server (SQLite,
in-memory rate limits with the raised tiers of bench/run.py, one worker pinned to CPU 0),
seeded through GraphQL with 100 keys; the keyed `viewer` query over the 100 keys throughout.
Every load comes from wrk (C), pinned to CPU 1. For each KEYPLANE_MAX_IN_FLIGHT:MAX_QUEUED
pair asked for (`--limits`), a fresh server:

1. capacity: wrk closed loop (bench/wrk.lua), 16 connections: 2xx answers a second;
2. unloaded latency: bench/openloop.lua at 50 requests a second for `--probe` s (p50);
3. the burst: bench/openloop.lua at 2x that capacity for `--burst` seconds, over
   `--connections` connections, each request due at a fixed time and its latency counted
   from then (so a generator that falls behind shows in the latency, not hidden: coordinated
   omission is accounted for); at the same time a second wrk sends nothing until the burst
   ends, then probes at 50 a second for 8 s.

It reports p99 of the admitted (2xx) requests / the unloaded p50 (target ≤ 3); how fast the
refused ones were refused, and whether each 503 carried Retry-After; requests lost from the
keys' usage counts (2xx answers seen by wrk, against the growth of the keys' `totalRequests`,
read back through GraphQL); and the first second after the burst from which the probes' p50
stays within 1.5x the unloaded p50 and none is refused (target ≤ 5 s).

On a machine shared with other work, wall-clock figures move: the load average is reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Container
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import run
from loadgen import percentile
from run import HOST, LOAD_CPU, Server, bearer, body, log
from seed import Issuer, Seeded, gql, seed

RESULTS = run.BENCH_DIR / "results" / "overload.md"
OPENLOOP = run.BENCH_DIR / "openloop.lua"
VIEWER = "{ viewer { kind apiKey { id } } }"
TOTALS = """query($e: ID!) { environment(id: $e) { apiKeys(first: 100) {
  edges { node { totalRequests } } } } }"""
PROBE_RATE = 50  # probes a second, before (unloaded) and after the burst
PROBE_CONNECTIONS = 4
PROBE_SECONDS = 8
ADMITTED = range(200, 300)
REFUSED = (503,)
RECOVERED = 1.5  # probes' p50 within this multiple of the unloaded p50
GRACE_SECONDS = 3  # for the last answers, after the last request was due
START_SECONDS = 0.2  # openloop.lua's schedule starts this long after wrk is connected


@dataclass
class Answers:
    """What one openloop.lua run saw; times in µs on the monotonic clock."""

    sent: int
    answered: int
    errors: dict[str, int]
    t0: float
    # (status, retry_after, due, sent, done) per answer, times from t0
    rows: list[tuple[int, bool, float, float, float]] = field(default_factory=list)

    def latencies_ms(self, statuses: Container[int]) -> list[float]:
        """Of the answers with these statuses, from when each request was due (or was sent,
        if wrk sent it early: its timers are in whole ms) to its whole answer."""
        return sorted(
            (done - min(due, sent)) / 1000
            for status, _, due, sent, done in self.rows
            if status in statuses
        )


BOOST = False  # --boost


def boost(pid: int) -> None:
    """With --boost: nice -20, for the process and its session's scheduling group (each process
    spawned here has its own session, and so its own autogroup when the kernel groups them):
    other work on the shared cores then takes little of the server's and wrk's time."""
    if BOOST:
        os.setpriority(os.PRIO_PROCESS, pid, -20)
        autogroup = Path(f"/proc/{pid}/autogroup")
        if autogroup.exists():
            autogroup.write_text("-20")


def involuntary_switches(pid: int) -> int:
    """How often the server's threads were preempted (a runnable thread made to wait)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                total += int(line.split()[1])
    return total


def stolen(before: list[int], after: list[int], switches: int) -> dict[str, float]:
    """Of CPU 0's time between two `run.core_ticks` readings: the share the hypervisor took
    (steal) and the share spent on softirqs (loopback networking); and `switches`, the
    server's preemptions over the same time (a count)."""
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = max(1, sum(spent))
    return {"steal": spent[7] / total, "softirq": spent[6] / total, "switches": switches}


def openloop(
    port: int, path: Path, answers: Path, schedule: list[tuple[float, float]], connections: int
) -> subprocess.Popen[bytes]:
    """Start wrk with bench/openloop.lua on CPU 1; `finish` collects it."""
    seconds = sum(s for _, s in schedule) + START_SECONDS + GRACE_SECONDS
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{math.ceil(seconds)}s",
        "--timeout",
        "60s",
        "-s",
        str(OPENLOOP),
        f"http://{HOST}:{port}/graphql",
        "--",
        str(path),
        str(answers),
        ",".join(f"{rate:g}:{s:g}" for rate, s in schedule),
    ]
    process = run.spawn(command, cpu=LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    boost(process.pid)
    return process


def finish(process: subprocess.Popen[bytes], answers: Path, timeout: float) -> Answers:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        run.stop(process, timeout=5)
    line = next((x for x in out.decode().splitlines() if x.startswith("OPENLOOP-RESULT ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {err.decode()[-2000:]}")
    result = json.loads(line.removeprefix("OPENLOOP-RESULT "))
    rows = []
    for text in answers.read_text().splitlines():
        _, status, retry_after, due, sent, done = text.split("\t")
        rows.append((int(status), retry_after == "1", float(due), float(sent), float(done)))
    return Answers(result["sent"], result["answered"], result["errors"], result["t0_us"], rows)


def closed_loop(port: int, path: Path, seconds: float) -> tuple[float, int]:
    """2xx answers a second from wrk with bench/wrk.lua, 16 connections, and their number."""
    command = ["wrk", "-t1", "-c16", f"-d{max(1, round(seconds))}s", "--timeout", "10s"]
    command += ["-s", str(run.BENCH_DIR / "wrk.lua"), f"http://{HOST}:{port}/graphql", "--"]
    process = run.spawn([*command, str(path)], cpu=LOAD_CPU, stdout=subprocess.PIPE)
    boost(process.pid)
    try:
        out, _ = process.communicate(timeout=seconds + 30)
    finally:
        run.stop(process, timeout=5)
    line = next(x for x in out.decode().splitlines() if x.startswith("WRK-RESULT "))
    result = json.loads(line.removeprefix("WRK-RESULT "))
    answered = int(result["requests"] - result["non_2xx"])
    return answered / (result["duration_us"] / 1e6), answered


def total_requests(port: int, seeded: Seeded) -> int:
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30.0) as client:
        data = gql(client, TOTALS, {"e": seeded.environment_id}, token=seeded.jwt)
    return sum(e["node"]["totalRequests"] for e in data["environment"]["apiKeys"]["edges"])


def p50(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def probe_seconds(probes: Answers, burst_end: float) -> dict[int, list[tuple[float, int]]]:
    """The after-burst probes by whole second after the burst's end: (latency ms, status)."""
    seconds: dict[int, list[tuple[float, int]]] = {}
    for status, _, due, sent, done in probes.rows:
        at = (probes.t0 + due - burst_end) / 1e6
        if 0 <= at < PROBE_SECONDS:
            seconds.setdefault(int(at), []).append(((done - min(due, sent)) / 1000, status))
    return seconds


def recovery(seconds: dict[int, list[tuple[float, int]]], unloaded: float) -> float | None:
    """The first whole second after the burst from which every second's probes have a p50
    within RECOVERED x the unloaded p50, and none refused (None: not within the probes)."""

    def normal(probes: list[tuple[float, int]]) -> bool:
        ok = all(200 <= status < 300 for _, status in probes)
        return ok and p50([ms for ms, _ in probes]) <= RECOVERED * unloaded

    for start in sorted(seconds):
        if all(normal(v) for s, v in seconds.items() if s >= start):
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
    boost(server.pid)
    try:
        seeded = seed(f"http://{HOST}:{port}", issuer, keys=100)
        requests = [(bearer(s), body(VIEWER)) for s in seeded.secrets]
        path = workdir / "viewers.tsv"
        path.write_text("".join(f"{a}\t{b}\n" for a, b in requests))
        run.check(port, requests[:3], frozenset(), server.name)
        if args.warmup:
            closed_loop(port, path, args.warmup)
        cpu_before = run.cpu_seconds(server.pid)
        capacity, answered = closed_loop(port, path, args.capacity_seconds)
        served_cost = (run.cpu_seconds(server.pid) - cpu_before) / max(1, answered)
        unloaded_file = workdir / f"unloaded-{limit}.tsv"
        schedule = [(PROBE_RATE, args.probe)]
        unloaded = finish(
            openloop(port, path, unloaded_file, schedule, PROBE_CONNECTIONS),
            unloaded_file,
            timeout=args.probe + 60,
        )
        base = p50(unloaded.latencies_ms(ADMITTED))
        rate = round(args.factor * capacity)
        time.sleep(2.0)  # the usage flush of everything so far
        before = total_requests(port, seeded)
        load_before = os.getloadavg()[0]
        log(
            f"limit {limit}: unloaded p50 {base:.2f} ms, capacity {capacity:,.0f} req/s; "
            f"offering {rate:,} req/s for {args.burst:g} s (load average {load_before:.2f})"
        )
        burst_file, probe_file = workdir / f"burst-{limit}.tsv", workdir / f"probes-{limit}.tsv"
        probing = openloop(
            port,
            path,
            probe_file,
            [(0, args.burst), (PROBE_RATE, PROBE_SECONDS)],
            PROBE_CONNECTIONS,
        )
        ticks, switches = run.core_ticks(0), involuntary_switches(server.pid)
        cpu_before = run.cpu_seconds(server.pid)
        bursting = openloop(port, path, burst_file, [(rate, args.burst)], args.connections)
        timeout = args.burst + PROBE_SECONDS + 120
        burst = finish(bursting, burst_file, timeout)
        burst_cpu = run.cpu_seconds(server.pid) - cpu_before
        cpu0 = stolen(ticks, run.core_ticks(0), involuntary_switches(server.pid) - switches)
        probes = finish(probing, probe_file, timeout)
        if args.keep:  # when the burst's due times start (CLOCK_MONOTONIC, microseconds)
            (workdir / f"burst-{limit}.t0.log").write_text(f"{burst.t0:.0f}\n")
        load_after = os.getloadavg()[0]
        time.sleep(2.5)  # two usage flushes
        after = total_requests(port, seeded)
    finally:
        server.stop()
    seconds = probe_seconds(probes, burst.t0 + args.burst * 1e6)
    admitted = burst.latencies_ms(ADMITTED)
    refused = burst.latencies_ms(REFUSED)
    statuses: dict[int, int] = {}
    for status, *_ in burst.rows:
        statuses[status] = statuses.get(status, 0) + 1
    windows: dict[int, list[float]] = {}  # admitted latencies by 5 s of the burst
    for status, _, due, sent, done in burst.rows:
        if 200 <= status < 300:
            windows.setdefault(int(due / 5e6), []).append((done - min(due, sent)) / 1000)
    ok = len(admitted) + sum(1 for status, *_ in probes.rows if 200 <= status < 300)
    return {
        "limit": limit,
        "unloaded_p50": base,
        "unloaded_p99": percentile(unloaded.latencies_ms(ADMITTED), 0.99),
        "capacity": capacity,
        "rate": rate,
        "burst": burst,
        "statuses": statuses,
        "admitted_p50": percentile(admitted, 0.5),
        "admitted_p99": percentile(admitted, 0.99),
        "refused": len(refused),
        "refused_p50": percentile(refused, 0.5),
        "refused_p99": percentile(refused, 0.99),
        "without_retry_after": sum(1 for s, ra, *_ in burst.rows if s == 503 and not ra),
        "served_rps": len(admitted) / args.burst,
        "lag_p99": percentile(sorted((sent - due) / 1000 for *_, due, sent, _ in burst.rows), 0.99),
        "unanswered": burst.sent - burst.answered + probes.sent - probes.answered,
        "wrk_errors": {k: v for k, v in burst.errors.items() if k != "status" and v},
        "counted": after - before,
        "answered_2xx": ok,
        "seconds": seconds,
        "windows": [percentile(sorted(windows[w]), 0.99) for w in sorted(windows)],
        "recovered_after": recovery(seconds, base),
        "load": (load_before, load_after),
        "cpu0": cpu0,
        # Server CPU a 2xx cost at capacity; and what the burst cost beyond its 2xx at that
        # price, a 503 (refusing, and serving one request a pass rather than many).
        "served_cost_us": served_cost * 1e6,
        "refusal_cost_us": (burst_cpu - len(admitted) * served_cost) / max(1, len(refused)) * 1e6,
    }


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
    lines = [
        f"# keyplane under overload, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Command: `{' '.join(['python bench/overload.py', *sys.argv[1:]])}`.",
        f"- Machine: {run.cpu_model()}, {os.cpu_count()} CPUs; {run.versions()}; "
        f"{wrk.stdout.split('Copyright')[0].strip() or 'wrk'}.",
        "- keyplane: one uvicorn worker (`keyplane serve`), SQLite, in-memory rate limits "
        "(tiers raised as in bench/run.py), pinned to CPU 0. Query: keyed `viewer` over 100 "
        "keys. Load from wrk on CPU 1: capacity closed loop (bench/wrk.lua, 16 connections, "
        f"{args.capacity_seconds:g} s, 2xx a second); unloaded p50 from bench/openloop.lua at "
        f"{PROBE_RATE}/s for {args.probe:g} s; the burst from bench/openloop.lua (fixed rate "
        f"{args.factor:g}x capacity for {args.burst:g} s over {args.connections} connections, "
        "latency from each request's due time), with probes at "
        f"{PROBE_RATE}/s for {PROBE_SECONDS} s from the burst's end.",
        "- The machine may be shared with other work: latencies move between runs; the load "
        "average (1 min) before and after each burst is given, and, over the burst's wrk run "
        "(the burst and a few seconds of start and grace), the share "
        "of CPU 0 (the server's) that the hypervisor took from this machine (steal) or that "
        "went to softirqs, and how often the server's threads were preempted (involuntary "
        "context switches, from /proc). Server CPU (user + system, /proc): a 2xx's at "
        "capacity; a 503's, what the burst cost beyond its 2xx at that price, over its 503s "
        "(so it also carries the cost of serving one request a pass of the event loop)."
        + (
            " With --boost: the server and wrk ran at nice -20 (their autogroups too), so "
            "that the other work took little of their cores."
            if args.boost
            else ""
        ),
        "",
        "| KEYPLANE_MAX_IN_FLIGHT : MAX_QUEUED | capacity req/s | offered req/s | served req/s "
        "| admitted p99 / unloaded p50 (≤ 3) | refused: share, p50 / p99 ms, without Retry-After "
        "| lost from usage counts | back to normal after (≤ 5 s) | generator late p99 ms "
        "| load average | CPU 0 stolen, softirq; server preempted "
        "| server CPU: a 2xx at capacity, a 503 in the burst |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        b = r["burst"]
        ratio = r["admitted_p99"] / r["unloaded_p50"]
        share = r["refused"] / max(1, b.sent)
        # A request wrk stopped waiting for (unanswered) may have been served and counted.
        lost = max(0, r["answered_2xx"] - r["counted"])
        uncounted_answers = r["counted"] - r["answered_2xx"]
        if uncounted_answers > r["unanswered"]:
            lost = -uncounted_answers  # counted more than was sent: a bug too
        back = r["recovered_after"]
        others = {c: n for c, n in r["statuses"].items() if not (200 <= c < 300 or c == 503)}
        extra = f"; other statuses {others}" if others else ""
        if r["unanswered"] or r["wrk_errors"]:
            extra += f"; {r['unanswered']} unanswered, wrk errors {r['wrk_errors']}"
        cells = [
            r["limit"],
            f"{r['capacity']:,.0f}",
            f"{r['rate']:,} ({b.sent:,} sent)",
            f"{r['served_rps']:,.0f}",
            f"{r['admitted_p99']:.2f} / {r['unloaded_p50']:.2f} ms = **{ratio:.2f}** "
            f"({'met' if ratio <= 3 else 'missed'}; admitted p50 {r['admitted_p50']:.2f} ms)",
            f"{share:.0%}, {r['refused_p50']:.1f} / {r['refused_p99']:.1f} ms, "
            f"{r['without_retry_after']}{extra}",
            f"**{lost}** ({r['answered_2xx']:,} 2xx seen"
            + (f" + {r['unanswered']:,} unanswered" if r["unanswered"] else "")
            + f", {r['counted']:,} counted)",
            "not within 8 s" if back is None else f"**{back:g} s**",
            f"{r['lag_p99']:.2f}",
            f"{r['load'][0]:.2f} → {r['load'][1]:.2f}",
            f"{r['cpu0']['steal']:.1%}, {r['cpu0']['softirq']:.1%}; "
            f"{r['cpu0']['switches']:,.0f} times",
            f"{r['served_cost_us']:.0f} µs, {r['refusal_cost_us']:.0f} µs",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Probe p50 per second after the burst (ms; * = one refused), by limit: "
        + "; ".join(
            f"{r['limit']}: "
            + ", ".join(
                f"{p50([ms for ms, _ in r['seconds'].get(s, [])]):.2f}"
                + ("*" if any(st == 503 for _, st in r["seconds"].get(s, [])) else "")
                for s in range(PROBE_SECONDS)
            )
            for r in results
        )
        + ". Admitted p99 by 5 s of the burst (ms): "
        + "; ".join(
            f"{r['limit']}: " + ", ".join(f"{ms:.2f}" for ms in r["windows"]) for r in results
        )
        + ". Unloaded p99 (ms): "
        + ", ".join(f"{r['limit']}: {r['unloaded_p99']:.2f}" for r in results)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limits",
        default="64:16",
        help="KEYPLANE_MAX_IN_FLIGHT:KEYPLANE_MAX_QUEUED pairs to try, comma-separated",
    )
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--burst", type=float, default=30.0, help="seconds of overload")
    parser.add_argument("--capacity-seconds", type=float, default=5.0)
    parser.add_argument("--probe", type=float, default=5.0, help="seconds of unloaded probes")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="a 10 s burst")
    parser.add_argument(
        "--boost",
        action="store_true",
        help="on a shared machine (as root): server and wrk at nice -20, their autogroups too",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--keep",
        type=Path,
        help="copy every answer file (one line a request: status, Retry-After, due, sent, done "
        "in microseconds) and the server logs into this directory",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.burst, args.capacity_seconds, args.probe = 10.0, 3.0, 3.0
    global BOOST
    BOOST = args.boost
    if not shutil.which("wrk"):
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    limits = [tuple(map(int, x.split(":"))) for x in args.limits.split(",") if x.strip()]
    signal.signal(signal.SIGTERM, run._raise_interrupt)
    signal.signal(signal.SIGINT, run._raise_interrupt)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOAD_CPU})
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
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for kept in [*workdir.glob("*.tsv"), *workdir.glob("*.log")]:
                shutil.copy(kept, args.keep)
        shutil.rmtree(workdir, ignore_errors=True)
    text = report(results, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
