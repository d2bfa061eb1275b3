"""Fuzz a running `keyplane serve` with schemathesis, from the committed SDL, three times.

    python .ci/schemathesis/run.py http://127.0.0.1:PORT [--only jwt|api_key|anonymous]

The server is expected in the production profile, where introspection is closed, so the schema
comes from src/keyplane/schema/schema.graphql, never from the server. The runs:

    jwt        a dashboard session of a user who signed up through the API
    api_key    an all-scope key of that user's environment (project and environment created
               through the API)
    anonymous  no credentials

Each run has its own fixed seed and is bounded by a number of examples per operation and a
time budget. A run fails on any 5xx, any INTERNAL code or any GraphQL error without
`extensions.code` (the `keyplane_coded_errors` check in hooks.py), and on responses that break
the schema (schemathesis's `response_schema_conformance`). Exit status: 0 only if every run passed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SDL = ROOT / "src" / "keyplane" / "schema" / "schema.graphql"
CHECKS = "keyplane_coded_errors,response_schema_conformance"


@dataclass(frozen=True)
class Run:
    auth: str
    seed: int
    max_examples: int
    max_seconds: int


RUNS = (
    Run("jwt", seed=15001, max_examples=40, max_seconds=75),
    Run("api_key", seed=15002, max_examples=40, max_seconds=75),
    Run("anonymous", seed=15003, max_examples=40, max_seconds=75),
)

SIGN_UP = """mutation($email: String!, $password: String!) {
  signUp(input: {email: $email, password: $password, name: "schemathesis"}) { accessToken }
}"""
CREATE_PROJECT = 'mutation { createProject(input: {name: "fuzzed"}) { id } }'
CREATE_ENVIRONMENT = """mutation($projectId: ID!) {
  createEnvironment(input: {projectId: $projectId, name: "fuzzed"}) { id }
}"""


def graphql(url: str, query: str, variables: dict[str, Any], token: str = "") -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = httpx.post(
        url, json={"query": query, "variables": variables}, headers=headers, timeout=30
    )
    answer.raise_for_status()
    payload: dict[str, Any] = answer.json()
    if payload.get("errors"):
        raise SystemExit(f"schemathesis setup: keyplane refused: {payload['errors']}")
    data: dict[str, Any] = payload["data"]
    return data


def bootstrap(url: str) -> dict[str, str]:
    """Sign up, then create a project and an environment: what the credentials need."""
    email = f"schemathesis-{secrets.token_hex(4)}@example.com"
    password = secrets.token_urlsafe(24)
    session = graphql(url, SIGN_UP, {"email": email, "password": password})["signUp"]["accessToken"]
    project = graphql(url, CREATE_PROJECT, {}, session)["createProject"]["id"]
    environment = graphql(url, CREATE_ENVIRONMENT, {"projectId": project}, session)[
        "createEnvironment"
    ]["id"]
    return {
        "KEYPLANE_CI_EMAIL": email,
        "KEYPLANE_CI_PASSWORD": password,
        "KEYPLANE_CI_PROJECT_ID": project,
        "KEYPLANE_CI_ENVIRONMENT_ID": environment,
    }


def fuzz(run: Run, url: str, account: dict[str, str], reports: Path) -> tuple[int, float]:
    codes_file = reports / f"{run.auth}-codes.json"
    env = {
        **os.environ,
        **account,
        "KEYPLANE_CI_AUTH": run.auth,
        "KEYPLANE_CI_GRAPHQL_URL": url,
        "KEYPLANE_CI_CODES_FILE": str(codes_file),
    }
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file",
        str(HERE / "schemathesis.toml"),
        "run",
        str(SDL),
        "--url",
        url,
        "--checks",
        CHECKS,
        "--seed",
        str(run.seed),
        "--max-examples",
        str(run.max_examples),
        "--max-time",
        str(run.max_seconds),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--report",
        "junit",
        "--report-junit-path",
        str(reports / f"{run.auth}.junit.xml"),
        "--no-color",
    ]
    print(f"== schemathesis: {run.auth} (seed {run.seed}) ==", flush=True)
    started = time.monotonic()
    status = subprocess.run(command, env=env, cwd=ROOT, check=False).returncode
    elapsed = time.monotonic() - started
    seen = json.loads(codes_file.read_text()) if codes_file.exists() else {}
    print(f"schemathesis {run.auth}: exit {status} in {elapsed:.0f} s; error codes seen: {seen}")
    return status, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("base_url", help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--only", choices=[run.auth for run in RUNS], action="append")
    parser.add_argument("--reports", type=Path, help="where reports go (default: a temp dir)")
    args = parser.parse_args()

    url = args.base_url.rstrip("/") + "/graphql"
    reports = args.reports or Path(tempfile.mkdtemp(prefix="keyplane-schemathesis-"))
    reports.mkdir(parents=True, exist_ok=True)
    failed = []
    for run in RUNS:
        if args.only and run.auth not in args.only:
            continue
        # A fresh account per run: what one run's fuzzing set (an environment key policy, a
        # removed member, a logged-out session) must not refuse the next run's credentials.
        status, _ = fuzz(run, url, bootstrap(url), reports)
        if status != 0:
            failed.append(run.auth)
    print(f"schemathesis reports in {reports}")
    if failed:
        raise SystemExit(f"schemathesis failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
