"""The benchmark's reference app answers what `make bench` asks of it, in keyplane's shape."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from bench.reference import ENVIRONMENT_ID, KEY_PAGE, create_app
from bench.reference import schema as reference_schema
from graphql import parse, validate

from keyplane.schema.root import schema as keyplane_schema
from tests.conftest import PG_URL
from tests.serve_process import REDIS_URL

HELLO = {"query": "{ hello }"}
SCALEOUT_SETUPS = [
    "1 worker, SQLite + memory",
    "1 worker, PostgreSQL + Redis",
    "2 workers, PostgreSQL + Redis",
]


async def test_the_reference_answers_hello_alone_and_in_a_batch_of_25() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        single = await client.post("/graphql", json=HELLO)
        batch = await client.post("/graphql", json=[HELLO] * 25)

    assert (single.status_code, single.json()) == (200, {"data": {"hello": "Hello World"}})
    assert (batch.status_code, batch.json()) == (200, [{"data": {"hello": "Hello World"}}] * 25)


async def test_the_reference_serves_a_100_key_page_with_nested_fields() -> None:
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        response = await client.post(
            "/graphql", json={"query": KEY_PAGE % 100, "variables": {"e": ENVIRONMENT_ID}}
        )

    edges = response.json()["data"]["environment"]["apiKeys"]["edges"]
    assert len(edges) == 100
    assert edges[0]["node"]["environment"] == {"id": ENVIRONMENT_ID, "name": "Production"}
    assert edges[0]["node"]["createdBy"]["email"] == "bench@example.com"


def test_the_benchmarked_key_page_is_valid_against_keyplane_and_the_reference() -> None:
    document = parse(KEY_PAGE % 20)

    assert validate(keyplane_schema._schema, document) == []
    assert validate(reference_schema._schema, document) == []


@pytest.mark.slow
@pytest.mark.parametrize("side", ["keyplane", "reference"])
@pytest.mark.parametrize(
    "scenario",
    [
        "API-key viewer vs { hello }",
        "OAuth viewer vs { hello }",
        "list 20 keys vs same page",
        "list 20 keys by a MANAGE_PROJECT key vs same page",
        "batch of 25 API-key viewers vs 25 { hello }",
    ],
)
def test_the_instruction_bench_drives_each_side_without_valgrind(side: str, scenario: str) -> None:
    # bench/instructions.py runs this inner step under valgrind; here it runs bare, so a
    # scenario that stops answering 200 fails the suite rather than the next measurement.
    script = Path(__file__).resolve().parents[1] / "bench" / "instructions.py"

    done = subprocess.run(
        [sys.executable, str(script), "--inner", side, scenario, "16"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("limit", ["100/minute", "10,000/minute"])
def test_the_instruction_bench_drives_keys_near_their_limit_without_valgrind(limit: str) -> None:
    # The limits table: 100 keys filled to near `limit`, every request still admitted.
    script = Path(__file__).resolve().parents[1] / "bench" / "instructions.py"

    done = subprocess.run(
        [sys.executable, str(script), "--inner", "limits", limit, "32"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-2000:]


def _bench(script: str, *arguments: str, tmp_path: Path) -> str:
    """Run a bench scenario at tiny sizes (a smoke run: no figure is judged here)."""
    output = tmp_path / "result.md"
    path = Path(__file__).resolve().parents[1] / "bench" / script
    done = subprocess.run(
        [sys.executable, str(path), *arguments, "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return output.read_text()


@pytest.mark.slow
def test_the_scale_bench_seeds_keys_straight_into_sqlite_and_reports_each_figure(
    tmp_path: Path,
) -> None:
    report = _bench(
        "scale.py",
        *("--keys", "1200", "--small", "150", "--page-keys", "300", "--rss-keys", "120"),
        *("--repeat", "1", "--duration", "0.5", "--warmup", "0"),
        tmp_path=tmp_path,
    )

    assert "keyed viewer, 100 rotating keys: 150 keys / 1,200 keys" in report
    assert "100-key env / 300-key env" in report
    assert "after 120 distinct keys each made one request" in report
    assert "non-2xx" not in report


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="the overload bench drives wrk")
def test_the_overload_bench_offers_twice_the_capacity_and_checks_the_usage_counts(
    tmp_path: Path,
) -> None:
    report = _bench(
        "overload.py",
        *("--burst", "1", "--capacity-seconds", "1", "--probe", "0.5", "--warmup", "0"),
        *("--connections", "64"),
        tmp_path=tmp_path,
    )

    row = next(line for line in report.splitlines() if line.startswith("| 64:16 |"))
    assert "**0** (" in row  # no request lost from the usage counts
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[-2].endswith(" times")  # what the machine did meanwhile: steal, softirq, preempted
    assert re.fullmatch(r"\d+ µs, -?\d+ µs", cells[-1])  # server CPU: a 2xx, a 503


@pytest.mark.slow
@pytest.mark.skipif(
    not (PG_URL and REDIS_URL),
    reason="KEYPLANE_TEST_DATABASE_URL (PostgreSQL) and KEYPLANE_TEST_REDIS_URL are not both set",
)
def test_the_scaleout_bench_serves_each_setup_and_reports_cpu_per_request(tmp_path: Path) -> None:
    # Each setup on its own fresh database of this PostgreSQL server; any non-2xx fails the run.
    figures = tmp_path / "figures.json"
    report = _bench(
        "scaleout.py",
        *("--postgres", PG_URL.split("?", 1)[0].rsplit("/", 1)[0], "--redis", REDIS_URL),
        *("--repeat", "1", "--duration", "1", "--warmup", "0", "--concurrency", "4"),
        *("--json", str(figures)),
        tmp_path=tmp_path,
    )

    for setup in SCALEOUT_SETUPS:
        assert f"| {setup} | " in report
    assert "CPU per request, PG+Redis / SQLite+memory: this **" in report
    runs = json.loads(figures.read_text())["sides"]["this"]["setups"]
    assert sorted(runs) == sorted(SCALEOUT_SETUPS)
    assert all(run["requests"] > 0 and run["cpu_ms"] > 0 for [run] in runs.values())
    # how the 4 connections were split between the two workers: all of them, on workers
    [two_workers] = runs["2 workers, PostgreSQL + Redis"]
    assert sum(two_workers["connections"]) == 4
    assert "connections by worker, halfway through each 2-worker run: " in report
