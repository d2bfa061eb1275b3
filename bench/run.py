"""keyplane against a bare Strawberry reference, scenario by scenario: `make bench`.

Starts `keyplane serve` (SQLite in a temporary data dir, in-memory rate-limit storage) and
bench/reference.py under uvicorn with the same settings (one worker, uvloop/httptools when
installed, no access log), both pinned to CPU 0 and loaded one at a time. Seeds keyplane through
its public GraphQL API, then drives each scenario from CPU 1 with wrk (when installed) or
bench/loadgen.py: a warm-up, then alternating short runs of each server, and reports medians.
Every process it starts is stopped at the end, on Ctrl-C too. Traffic goes to 127.0.0.1 only.

    .venv/bin/python bench/run.py            # 5 x 4 s per scenario and server
    .venv/bin/python bench/run.py --quick    # 1 x 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx
from reference import ENVIRONMENT_ID as REFERENCE_ENVIRONMENT_ID
from reference import KEY_PAGE
from seed import Issuer, Seeded, insert_keys, seed

from keyplane.auth.api_key import generate_secret

BENCH_DIR = Path(__file__).resolve().parent
RESULTS = BENCH_DIR / "results" / "wallclock.md"
HOST = "127.0.0.1"
SERVER_CPU = 0
LOAD_CPU = 1
# Far above anything one worker can serve, so every scenario measures the admitted path, still
# through the moving window. Per second, not per minute: a moving window keeps one entry per
# admitted unit until it leaves the window, and limits' memory storage inserts at the front of
# that list (O(entries) a hit). A production bucket holds at most its limit (100 entries for a
# key at 100/minute); a 100,000,000/minute bucket under bench load would hold a minute of
# traffic (~100,000 entries) and measure a cost no deployment pays. Per second it holds about
# one second of traffic (~1,000-3,000 entries), still more than any real bucket.
GENEROUS_LIMITS = (
    "api_key=1000000/second;oauth=1000000/second;jwt=1000000/second;anonymous=1000000/second"
)
SETTLE_SECONDS = 0.5
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

VIEWER_KEY = "{ viewer { kind apiKey { id } } }"
VIEWER_USER = "{ viewer { kind user { id } } }"
HELLO = "{ hello }"
TYPENAME = "{ __typename }"
CREATE_KEY = """mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { apiKey { id prefix } secret } }"""


# --- processes ---------------------------------------------------------------------------


STARTED: list[subprocess.Popen[bytes]] = []


def spawn(command: Sequence[str], *, cpu: int | None, **kwargs: Any) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so Ctrl-C reaches only us) and remember it."""
    if cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", str(cpu), *command]
    process = subprocess.Popen(list(command), start_new_session=True, **kwargs)
    STARTED.append(process)
    return process


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM (a graceful stop: keyplane flushes its usage), then SIGKILL if it lingers."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=timeout)
    if process in STARTED:
        STARTED.remove(process)


def stop_all() -> None:
    for process in list(STARTED):
        stop(process)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """pid and every process below it (uvicorn serves one worker in-process, but be sure)."""
    parents: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo and len(found) < 1000:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid and its descendants, from /proc/PID/stat."""
    total = 0
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / CLOCK_TICKS


def core_ticks(cpu: int) -> list[int]:
    """One core's clock ticks from /proc/stat: user nice system idle iowait irq softirq steal
    (then guest times); all zeros if the core is not listed."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            return [int(x) for x in line.split()[1:9]]
    return [0] * 8


def cpu_core_times(cpu: int) -> tuple[int, int]:
    """(busy, total) clock ticks of one core from /proc/stat; steal counts as busy.

    Interrupt time is left out of busy: on loopback much of it is the network stack carrying
    the measured server's own traffic, not somebody else's work.
    """
    user, nice, system, idle, iowait, irq, softirq, steal = core_ticks(cpu)
    busy = user + nice + system + steal
    return busy, busy + idle + iowait + irq + softirq


def _status_kib(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    """VmHWM, the resident set's high-water mark, of the biggest process in the tree."""
    peaks = []
    for each in descendants(pid):
        with contextlib.suppress(OSError):
            peaks.append(_status_kib(each, "VmHWM"))
    return max(peaks, default=0) / 1024


def rss_mb(pid: int) -> float:
    return _status_kib(pid, "VmRSS") / 1024


def reset_peak_rss(pid: int) -> bool:
    """Restart the high-water mark (writing 5 to clear_refs); False where not permitted."""
    try:
        for each in descendants(pid):
            Path(f"/proc/{each}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict[str, str]
    port: int
    log: Path
    ready_path: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = spawn(
                self.command, cpu=SERVER_CPU, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if self._probe():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT} s:\n{self.log_tail()}")

    def _probe(self) -> bool:
        url = f"http://{HOST}:{self.port}{self.ready_path}"
        if self.ready_path == "/graphql":
            response = httpx.post(url, json={"query": TYPENAME}, timeout=2.0)
        else:
            response = httpx.get(url, timeout=2.0)
        return response.status_code == 200

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)
            self.process = None

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


# --- load ----------------------------------------------------------------------------------


Request = tuple[str, str]  # (Authorization header or "", JSON body)


def body(query: str, variables: dict[str, Any] | None = None) -> str:
    return json.dumps({"query": query, "variables": variables or {}}, separators=(",", ":"))


def bearer(token: str) -> str:
    return f"Bearer {token}"


@dataclass
class Measurement:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    cpu_us: float = 0.0
    # Share of the server core's time that went to anything but the server during the run:
    # other processes on a shared machine, or the hypervisor (steal). Noise, when high.
    other_load: float = 0.0


class LoadGenerator:
    """wrk with bench/wrk.lua when installed, else bench/loadgen.py; both pinned to LOAD_CPU."""

    def __init__(self, kind: str, concurrency: int, workdir: Path) -> None:
        self.kind = kind
        self.concurrency = concurrency
        self.workdir = workdir
        self._files: dict[tuple[Request, ...], Path] = {}

    def describe(self) -> str:
        if self.kind == "wrk":
            version = subprocess.run(
                ["wrk", "--version"], capture_output=True, text=True, timeout=10
            ).stdout
            name = version.split("Copyright")[0].strip() or "wrk"
            return f"{name}, one thread, with bench/wrk.lua"
        return f"bench/loadgen.py (asyncio, {self.concurrency} keep-alive connections)"

    def requests_file(self, requests: Sequence[Request]) -> Path:
        key = tuple(requests)
        if key not in self._files:
            path = self.workdir / f"requests-{len(self._files)}.tsv"
            path.write_text("".join(f"{auth}\t{text}\n" for auth, text in requests))
            self._files[key] = path
        return self._files[key]

    def run(self, port: int, requests: Sequence[Request], seconds: float) -> Measurement:
        path = self.requests_file(requests)
        if self.kind == "wrk":
            return self._wrk(port, path, seconds)
        return python_load(port, path, self.concurrency, seconds=seconds)

    def _wrk(self, port: int, path: Path, seconds: float) -> Measurement:
        whole_seconds = max(1, round(seconds))
        command = [
            "wrk",
            "-t1",
            f"-c{self.concurrency}",
            f"-d{whole_seconds}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH_DIR / "wrk.lua"),
            f"http://{HOST}:{port}/graphql",
            "--",
            str(path),
        ]
        output = _run_bounded(command, timeout=whole_seconds + 30)
        line = next((x for x in output.splitlines() if x.startswith("WRK-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{output}")
        result = json.loads(line.removeprefix("WRK-RESULT "))
        duration = result["duration_us"] / 1e6
        return Measurement(
            requests=result["requests"],
            rps=result["requests"] / duration if duration else 0.0,
            p50_ms=result["p50_us"] / 1000,
            p99_ms=result["p99_us"] / 1000,
            non_2xx=result["non_2xx"],
            errors=sum(result[k] for k in ("connect", "read", "write", "timeout")),
        )


def python_load(
    port: int, path: Path, concurrency: int, *, seconds: float = 0.0, once: bool = False
) -> Measurement:
    command = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--requests",
        str(path),
        "--concurrency",
        str(concurrency),
        "--duration",
        str(seconds),
        "--max-seconds",
        "300",
    ]
    if once:
        command.append("--once")
    output = _run_bounded(command, timeout=(300 if once else seconds) + 60)
    result = json.loads(output.strip().splitlines()[-1])
    return Measurement(
        requests=result["requests"],
        rps=result["rps"],
        p50_ms=result["p50_ms"],
        p99_ms=result["p99_ms"],
        non_2xx=sum(n for code, n in result["statuses"].items() if not code.startswith("2")),
        errors=result["errors"],
    )


def _run_bounded(command: list[str], *, timeout: float) -> str:
    process = spawn(command, cpu=LOAD_CPU, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        stop(process, timeout=5)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} failed ({process.returncode}): {err.decode()[-2000:]}")
    return out.decode()


# --- scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    keyplane: list[Request]
    reference: list[Request]
    # Requests expected to be refused (the invalid keys of the mix): their count is not an error.
    expected_refusals: frozenset[str] = frozenset()
    target: float | None = None  # minimum req/s ratio the issue asks for


@dataclass
class Outcome:
    scenario: Scenario
    keyplane: list[Measurement] = field(default_factory=list)
    reference: list[Measurement] = field(default_factory=list)
    keyplane_rss: float = 0.0
    reference_rss: float = 0.0


def scenarios(seeded: Seeded, invalid: list[str], environment_id: str) -> list[Scenario]:
    key = bearer(seeded.secrets[0])
    dashboard = bearer(seeded.jwt)
    oauth = bearer(seeded.oauth_token)
    hello = [("", body(HELLO))]
    mix: list[Request] = []
    for n in range(100):
        if n % 20 == 10:
            mix.append((bearer(invalid[n // 20]), body(VIEWER_KEY)))
        else:
            mix.append((bearer(seeded.secrets[n % len(seeded.secrets)]), body(VIEWER_KEY)))
    batch = "[" + ",".join([body(VIEWER_KEY)] * 25) + "]"
    hello_batch = "[" + ",".join([body(HELLO)] * 25) + "]"

    def page(size: int, env: str) -> str:
        return body(KEY_PAGE % size, {"e": env})

    create = body(
        CREATE_KEY,
        {
            "input": {
                "environmentId": seeded.churn_environment_id,
                "name": "bench churn",
                "scopes": ["GENERATE_DOCUMENTS"],
            }
        },
    )
    typename = [("", body(TYPENAME))]
    return [
        Scenario("anonymous `{ __typename }`", typename, typename, target=0.9),
        Scenario("API-key viewer vs `{ hello }`", [(key, body(VIEWER_KEY))], hello, target=0.7),
        Scenario("JWT viewer vs `{ hello }`", [(dashboard, body(VIEWER_USER))], hello, target=0.7),
        Scenario("OAuth viewer vs `{ hello }`", [(oauth, body(VIEWER_USER))], hello, target=0.7),
        Scenario(
            "list 20 keys (JWT) vs same page",
            [(dashboard, page(20, seeded.environment_id))],
            [("", page(20, environment_id))],
            target=0.6,
        ),
        Scenario(
            "list 100 keys (JWT) vs same page",
            [(dashboard, page(100, seeded.environment_id))],
            [("", page(100, environment_id))],
            target=0.5,
        ),
        Scenario(
            "batch of 25 API-key viewers vs 25 `{ hello }`",
            [(key, batch)],
            [("", hello_batch)],
            target=0.7,
        ),
        Scenario("createApiKey (JWT) vs `{ hello }`", [(dashboard, create)], hello),
        Scenario(
            "95 keys + 5% invalid keys vs `{ hello }`",
            mix,
            hello,
            expected_refusals=frozenset(bearer(s) for s in invalid),
        ),
    ]


def check(port: int, requests: Sequence[Request], refused: frozenset[str], label: str) -> None:
    """Send each distinct request once: a benchmark of error answers would measure nothing."""
    with httpx.Client(base_url=f"http://{HOST}:{port}", timeout=30.0) as client:
        for auth, text in dict.fromkeys(requests):
            headers = {"Content-Type": "application/json", "Accept": "application/json"}
            if auth:
                headers["Authorization"] = auth
            response = client.post("/graphql", content=text, headers=headers)
            expected = 401 if auth in refused else 200
            answers = response.json()
            items = answers if isinstance(answers, list) else [answers]
            bad = expected == 200 and any(i.get("errors") or i.get("data") is None for i in items)
            if response.status_code != expected or bad:
                raise RuntimeError(
                    f"{label}: expected HTTP {expected} without errors, got "
                    f"{response.status_code}: {response.text[:400]}"
                )


def measure(
    server: Server, load: LoadGenerator, requests: Sequence[Request], seconds: float
) -> Measurement:
    before = cpu_seconds(server.pid)
    core_busy, core_total = cpu_core_times(SERVER_CPU)
    result = load.run(server.port, requests, seconds)
    time.sleep(SETTLE_SECONDS)  # keyplane's usage flush of the run's last second lands here
    spent = cpu_seconds(server.pid) - before
    busy, total = cpu_core_times(SERVER_CPU)
    result.cpu_us = spent / result.requests * 1e6 if result.requests else 0.0
    if total > core_total:
        others = (busy - core_busy) - spent * CLOCK_TICKS
        result.other_load = max(0.0, others / (total - core_total))
    return result


def run_scenario(
    scenario: Scenario,
    keyplane: Server,
    reference: Server,
    load: LoadGenerator,
    *,
    warmup: float,
    duration: float,
    repeat: int,
) -> Outcome:
    outcome = Outcome(scenario)
    check(keyplane.port, scenario.keyplane, scenario.expected_refusals, "keyplane")
    check(reference.port, scenario.reference, frozenset(), "reference")
    sides = [(keyplane, scenario.keyplane, outcome.keyplane)]
    sides.append((reference, scenario.reference, outcome.reference))
    for server, requests, _ in sides:
        reset_peak_rss(server.pid)
        if warmup > 0:
            load.run(server.port, requests, warmup)
    for rep in range(repeat):
        # Alternate which server goes first, so a drift in the machine hits both alike.
        for server, requests, results in sides if rep % 2 == 0 else sides[::-1]:
            results.append(measure(server, load, requests, duration))
    outcome.keyplane_rss = peak_rss_mb(keyplane.pid)
    outcome.reference_rss = peak_rss_mb(reference.pid)
    return outcome


# --- report --------------------------------------------------------------------------------


def median(values: Iterator[float]) -> float:
    items = list(values)
    return statistics.median(items) if items else 0.0


def _pair(kp: float, ref: float, digits: int, *, thousands: bool = False) -> str:
    form = f"{{:,.{digits}f}}" if thousands else f"{{:.{digits}f}}"
    ratio = kp / ref if ref else float("nan")
    return f"{form.format(kp)} / {form.format(ref)} = **{ratio:.2f}**"


def pair_spread(keyplane: list[Measurement], reference: list[Measurement]) -> str:
    """The lowest and highest req/s ratio of the runs made one after the other (a pair): how
    far one run's machine moved the figure the table takes the medians for."""
    ratios = [k.rps / r.rps for k, r in zip(keyplane, reference, strict=True) if r.rps]
    if len(ratios) < 2:
        return ""
    return f" (pairs {min(ratios):.2f} to {max(ratios):.2f})"


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| scenario (keyplane vs reference) | req/s | p50 ms | p99 ms | server CPU µs/req "
        "| peak RSS MB | target (req/s ratio) |",
        "|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        kp, ref = o.keyplane, o.reference

        def med(results: list[Measurement], name: str) -> float:
            return median(getattr(m, name) for m in results)

        rps_ratio = med(kp, "rps") / med(ref, "rps") if med(ref, "rps") else 0.0
        target = ""
        if o.scenario.target is not None:
            mark = "met" if rps_ratio >= o.scenario.target else "missed"
            target = f"≥ {o.scenario.target:.2f}: {mark}{pair_spread(kp, ref)}"
        cells = [
            o.scenario.name,
            _pair(med(kp, "rps"), med(ref, "rps"), 0, thousands=True),
            _pair(med(kp, "p50_ms"), med(ref, "p50_ms"), 2),
            _pair(med(kp, "p99_ms"), med(ref, "p99_ms"), 2),
            _pair(med(kp, "cpu_us"), med(ref, "cpu_us"), 0, thousands=True),
            _pair(o.keyplane_rss, o.reference_rss, 1),
            target,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def noise(outcomes: list[Outcome]) -> list[str]:
    loads = sorted(m.other_load for o in outcomes for m in o.keyplane + o.reference)
    if not loads:
        return []
    note = (
        f"- CPU {SERVER_CPU} time taken by anything but the measured server during the runs "
        f"(other processes, hypervisor steal): median {statistics.median(loads):.0%}, "
        f"max {loads[-1]:.0%}; load average at the end {os.getloadavg()[0]:.2f}."
    )
    if loads[-1] > 0.10:
        note += (
            " **The machine was not quiet: req/s and latency ratios are rough; CPU µs per "
            "request is the steadier figure.**"
        )
    return [note]


def anomalies(outcomes: list[Outcome]) -> list[str]:
    notes = []
    for o in outcomes:
        for side, results, expected in (
            ("keyplane", o.keyplane, o.scenario.expected_refusals),
            ("reference", o.reference, frozenset[str]()),
        ):
            sent = sum(m.requests for m in results)
            refused = sum(m.non_2xx for m in results)
            errors = sum(m.errors for m in results)
            if expected:
                share = len(expected) / len(o.scenario.keyplane)
                notes.append(
                    f"- {o.scenario.name}: {side} answered {refused:,} of {sent:,} requests "
                    f"with a non-2xx status ({refused / max(sent, 1):.1%}; "
                    f"{share:.0%} expected: the invalid keys' 401)."
                )
            elif refused or errors:
                notes.append(
                    f"- **{o.scenario.name}: {side} had {refused:,} non-2xx answers and "
                    f"{errors:,} socket errors in {sent:,} requests.**"
                )
    return notes


def versions() -> str:
    names = ["strawberry-graphql", "graphql-core", "starlette", "uvicorn", "uvloop", "httptools"]
    names += ["tortoise-orm", "aiosqlite", "limits"]
    found = []
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{name} {metadata.version(name)}")
    return ", ".join(found)


def event_loop() -> str:
    """What uvicorn's `auto` settings pick in this environment."""
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio (uvloop missing)"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11 (httptools missing)"
    return f"{loop} and {http}"


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


# --- main ----------------------------------------------------------------------------------


def keyplane_env(data_dir: Path, issuer: Issuer, rate_limits: str) -> dict[str, str]:
    # A developer's own KEYPLANE_* settings (a PostgreSQL URL, Redis...) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")}
    env.update(
        KEYPLANE_ENV="production",
        KEYPLANE_JWT_SECRET=secrets.token_urlsafe(48),  # production needs one
        KEYPLANE_DATA_DIR=str(data_dir),
        KEYPLANE_RATE_LIMITS=rate_limits,
        KEYPLANE_RATE_LIMIT_STORAGE="memory://",
        KEYPLANE_JWT_TTL_SECONDS="86400",
        **issuer.environ(),
    )
    return env


@dataclass
class ManyKeys:
    started_rss: float  # VmRSS once started and idle
    start_peak: float  # VmHWM of the start-up alone
    phase_peak: float  # VmHWM while the keys made their requests
    result: Measurement

    @property
    def lifetime_peak(self) -> float:
        return max(self.start_peak, self.phase_peak)


def measure_many_keys(
    keyplane: Server, seeded: Seeded, database_url: str, count: int, concurrency: int
) -> ManyKeys:
    """Memory of a fresh keyplane process while `count` distinct keys make one request each."""
    keyplane.stop()
    secrets = asyncio.run(
        insert_keys(
            database_url,
            environment_id=seeded.scale_environment_id,
            project_id=seeded.project_id,
            user_id=seeded.user_id,
            count=count,
        )
    )
    keyplane.start()
    check(keyplane.port, [("", body(TYPENAME))], frozenset(), "keyplane")
    started_rss = rss_mb(keyplane.pid)
    start_peak = peak_rss_mb(keyplane.pid)
    reset_peak_rss(keyplane.pid)
    path = keyplane.log.parent / "many-keys.tsv"
    path.write_text("".join(f"Bearer {s}\t{body(VIEWER_KEY)}\n" for s in secrets))
    result = python_load(keyplane.port, path, concurrency, once=True)
    time.sleep(1.5)  # one usage flush of all those keys
    return ManyKeys(started_rss, start_peak, peak_rss_mb(keyplane.pid), result)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per server and scenario")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up")
    parser.add_argument("--quick", action="store_true", help="1 run of 2 s, 1 s warm-up")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    parser.add_argument("--many-keys", type=int, default=10_000, help="0 skips that measurement")
    parser.add_argument("--rate-limits", default=GENEROUS_LIMITS, help="KEYPLANE_RATE_LIMITS")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.duration, args.warmup = 1, 2.0, 1.0
    if not (1 <= args.repeat <= 50 and 0.5 <= args.duration <= 300 and 0 <= args.warmup <= 60):
        parser.error("--repeat 1..50, --duration 0.5..300 s, --warmup 0..60 s")
    kind = args.loadgen
    if kind == "auto":
        kind = "wrk" if shutil.which("wrk") else "python"
    elif kind == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed")

    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)
    if (os.cpu_count() or 1) < 2:
        print("bench: fewer than 2 CPUs: server and load share one core", file=sys.stderr)
    else:
        # The harness itself (seeding, bookkeeping) stays off the server's core.
        os.sched_setaffinity(0, {LOAD_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="keyplane-bench-"))
    try:
        report = bench(args, kind, workdir)
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping the servers", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all()
        if args.keep:
            print(f"bench: kept {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    print(f"(written to {args.output})", file=sys.stderr)


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def bench(args: argparse.Namespace, kind: str, workdir: Path) -> str:
    data_dir = workdir / "data"
    issuer = Issuer.create(workdir / "jwks.json")
    env = keyplane_env(data_dir, issuer, args.rate_limits)
    database_url = f"sqlite://{data_dir / 'keyplane.sqlite3'}"
    kp_port, ref_port = free_port(), free_port()
    keyplane = Server(
        "keyplane",
        [sys.executable, "-m", "keyplane", "serve", "--host", HOST, "--port", str(kp_port)],
        env,
        kp_port,
        workdir / "keyplane.log",
        "/healthz",
    )
    uvicorn = [sys.executable, "-m", "uvicorn", "reference:app", "--app-dir", str(BENCH_DIR)]
    # keyplane serve's uvicorn settings: one worker, no access log, no proxy headers, auto
    # loop and HTTP (uvloop and httptools when installed).
    uvicorn += ["--host", HOST, "--port", str(ref_port), "--workers", "1", "--no-access-log"]
    uvicorn += ["--no-proxy-headers", "--loop", "auto", "--http", "auto", "--log-level", "info"]
    reference = Server(
        "reference",
        uvicorn,
        {k: v for k, v in os.environ.items() if not k.startswith("KEYPLANE_")},
        ref_port,
        workdir / "reference.log",
        "/graphql",
    )
    load = LoadGenerator(kind, args.concurrency, workdir)
    log(f"starting keyplane (port {kp_port}) and the reference (port {ref_port}) on CPU 0")
    keyplane.start()
    reference.start()
    peaks_reset = reset_peak_rss(keyplane.pid) and reset_peak_rss(reference.pid)
    log("seeding keyplane through its GraphQL API")
    seeded = seed(f"http://{HOST}:{kp_port}", issuer, keys=100)
    invalid = [generate_secret() for _ in range(5)]  # well formed, checksum valid, unknown
    chosen = scenarios(seeded, invalid, REFERENCE_ENVIRONMENT_ID)
    if args.only:
        chosen = [s for s in chosen if args.only.lower() in s.name.lower()]
    outcomes = []
    for scenario in chosen:
        log(f"{scenario.name}: warm-up {args.warmup:g} s, then {args.repeat} x {args.duration:g} s")
        outcome = run_scenario(
            scenario,
            keyplane,
            reference,
            load,
            warmup=args.warmup,
            duration=args.duration,
            repeat=args.repeat,
        )
        outcomes.append(outcome)
        kp = median(m.rps for m in outcome.keyplane)
        ref = median(m.rps for m in outcome.reference)
        log(f"  keyplane {kp:,.0f} req/s, reference {ref:,.0f} req/s")
    reference.stop()

    many: list[str] = []
    if args.many_keys:
        log(f"memory: a fresh keyplane, then {args.many_keys:,} distinct keys, one request each")
        m = measure_many_keys(keyplane, seeded, database_url, args.many_keys, args.concurrency)
        r = m.result
        ok = r.requests == args.many_keys and not r.non_2xx and not r.errors
        many = [
            f"**Peak RSS of a fresh keyplane after {args.many_keys:,} distinct keys each made "
            f"one request: {m.lifetime_peak:.1f} MB** (VmHWM over the process's life; target "
            f"≤ 150 MB: {'met' if m.lifetime_peak <= 150 else 'missed'}). Idle after start-up "
            f"it held {m.started_rss:.1f} MB, its start-up peaked at {m.start_peak:.1f} MB, "
            f"and the {r.requests:,} requests ({r.rps:,.0f} req/s"
            + ("" if ok else f"; {r.non_2xx:,} non-2xx, {r.errors:,} errors")
            + f") peaked at {m.phase_peak:.1f} MB "
            f"(+{m.phase_peak - m.started_rss:.1f} MB over idle)."
        ]
    keyplane.stop()

    per_run = f"{args.repeat} x {args.duration:g} s" + (" (--quick)" if args.quick else "")
    header = [
        f"# keyplane benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- Command: `{' '.join(['python bench/run.py', *sys.argv[1:]])}`.",
        f"- Machine: {cpu_model()}, {os.cpu_count()} CPUs, Linux {platform.release()}, "
        f"Python {platform.python_version()}.",
        f"- Servers: one uvicorn worker each, pinned to CPU {SERVER_CPU}, loaded one at a time; "
        f"uvicorn's `auto` loop and HTTP ({event_loop()}), no access log. "
        "keyplane: `keyplane serve`, SQLite in a temporary data dir, in-memory rate-limit "
        "storage. Reference: bench/reference.py (bare Strawberry + Starlette, ParserCache + "
        "ValidationCache, data in memory).",
        f"- Rate limits raised so the bench measures the admitted path, not refusals: "
        f"`KEYPLANE_RATE_LIMITS={args.rate_limits}` (still checked and counted on every "
        "request, in a moving window of one second: a bucket then holds about one second of "
        "bench traffic, more than the at most 100 to 200 entries of a production bucket; see "
        "GENEROUS_LIMITS in bench/run.py).",
        f"- Load: {load.describe()}, pinned to CPU {LOAD_CPU}; concurrency {args.concurrency}; "
        f"warm-up {args.warmup:g} s, then {per_run} per server, alternating; medians.",
        f"- Versions: {versions()}.",
        "",
        "Each cell: keyplane / reference = **ratio**. For req/s higher is better; for latency, "
        "CPU and memory lower is better. Server CPU is user + system time from /proc/PID/stat "
        "over a run, divided by its requests; peak RSS is VmHWM "
        + ("during the scenario." if peaks_reset else "since the server started.")
        + " Each cell is the median of the runs; the target column also gives the lowest and "
        "highest req/s ratio of two runs made back to back (pairs), which shows how much the "
        "machine moved between runs.",
        "",
    ]
    queries = [
        "Queries: API-key viewer `"
        + VIEWER_KEY
        + "`; JWT and OAuth viewer `"
        + VIEWER_USER
        + "` (the OAuth token's verified email names the bench user); lists `environment(id) "
        "{ apiKeys(first: N) { edges { node { id name prefix scopes status createdAt lastUsedAt "
        "totalRequests environment { id name } createdBy { id email } } } } }` with the "
        "dashboard JWT; createApiKey with the dashboard JWT; the mix: 95 distinct keys and 5 "
        "well-formed unknown keys (401). The reference answers `{ hello }` (or the same page "
        "from memory).",
        "",
    ]
    notes = noise(outcomes) + anomalies(outcomes)
    many_block = [*many, ""] if many else []
    return "\n".join([*header, *table(outcomes), "", *queries, *many_block, *notes, ""])


if __name__ == "__main__":
    main()
