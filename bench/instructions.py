"""Instructions per request, keyplane against the bare Strawberry reference, under valgrind.

Wall-clock ratios on a shared machine move by 10-20 % between runs (bench/run.py says how
much). Instruction counts do not: valgrind's cachegrind counts what the CPU executes, whatever
else runs. This drives both apps in-process through ASGI (no sockets, no HTTP parsing, one
asyncio loop, 16 requests in flight), counts a short and a long run of each side, and reports
(long - short) / (extra requests): start-up and seeding cancel out. It measures the Python work
a change adds or removes, not latency: use it to compare two versions of the code, and
bench/run.py for what a client sees.

    .venv/bin/python bench/instructions.py                    # every scenario, ~6 minutes
    .venv/bin/python bench/instructions.py --only viewer      # some of them
    .venv/bin/python bench/instructions.py --cors-origin https://app.example --send-origin

The keyed scenarios are those the issue's gates are judged on: they rotate over KEYS keys, each
with its own limit of 10,000 a minute and two scopes, MANAGE_PROJECT among them, every key
used once before counting (so that each side is measured warm); the key page is listed both by
a dashboard session and by such a key, and selects `createdBy { id email }`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
SCENARIOS: dict[str, tuple[str, str, str]] = {
    # name: (credential, keyplane query, reference query)
    "anonymous { __typename }": ("", "{ __typename }", "{ __typename }"),
    "API-key viewer vs { hello }": ("key", "{ viewer { kind apiKey { id } } }", "{ hello }"),
    "JWT viewer vs { hello }": ("jwt", "{ viewer { kind user { id } } }", "{ hello }"),
    "OAuth viewer vs { hello }": ("oauth", "{ viewer { kind user { id } } }", "{ hello }"),
    "list 20 keys vs same page": ("jwt", "PAGE", "PAGE"),
    "list 20 keys by a MANAGE_PROJECT key vs same page": ("key", "PAGE", "PAGE"),
    "batch of 25 API-key viewers vs 25 { hello }": (
        "key",
        "{ viewer { kind apiKey { id } } }",
        "{ hello }",
    ),
}
BATCH = 25  # operations in each request of a "batch" scenario
KEYS = 100  # the keyed scenarios rotate over this many keys
KEY_LIMIT = 10_000  # each key's own rateLimitPerMinute
KEY_SCOPES = ["MANAGE_PROJECT", "VIEW_ANALYTICS"]
ISSUER_DIR = "KEYPLANE_BENCH_ISSUER_DIR"  # where main() left the OAuth issuer's key and JWKS
CORS_ORIGIN = "KEYPLANE_BENCH_CORS_ORIGIN"  # listed in KEYPLANE_CORS_ORIGINS (--cors-origin)
SEND_ORIGIN = "KEYPLANE_BENCH_SEND_ORIGIN"  # "1": every request carries it (--send-origin)
CONCURRENCY = 16
LIMITS = "api_key=1000000/second;oauth=1000000/second;jwt=1000000/second;anonymous=1000000/second"
# Limits that do not slow down as they grow: the same keyed viewer over 100 rotating keys, each
# overridden to a small or a large per-minute limit and filled to near it before counting.
LIMIT_SIDES = {"100/minute": 100, "10,000/minute": 10_000}
LIMIT_KEYS = 100
LIMIT_HEADROOM = 40  # units left in each key's window once filled: more than a run spends
LIMIT_QUERY = "{ viewer { kind apiKey { id } } }"


# --- inside valgrind: one side, N requests -------------------------------------------------


async def _call(app: Any, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    status: list[int] = []
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/graphql",
        "raw_path": b"/graphql",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)
    return status[0]


async def _lifespan(app: Any) -> asyncio.Task[None]:
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    task = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    message = await outbox.get()
    if message["type"] != "lifespan.startup.complete":
        raise RuntimeError(f"keyplane did not start: {message}")
    return task


async def _seed(app: Any, keys: int) -> tuple[str, list[str], str]:
    """A user, a project, an environment and `keys` keys (KEY_SCOPES, KEY_LIMIT a minute each):
    (dashboard JWT, their secrets, env id)."""
    import httpx
    from seed import EMAIL, PASSWORD

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:

        async def gql(query: str, variables: dict[str, Any], token: str | None = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            answer = await client.post(
                "/graphql", json={"query": query, "variables": variables}, headers=headers
            )
            body = answer.json()
            if body.get("errors"):
                raise RuntimeError(json.dumps(body)[:300])
            return body["data"]

        token = (
            await gql(
                "mutation($i: SignUpInput!) { signUp(input: $i) { accessToken } }",
                {"i": {"email": EMAIL, "password": PASSWORD, "name": "Bench"}},
            )
        )["signUp"]["accessToken"]
        project = (
            await gql(
                "mutation($i: CreateProjectInput!) { createProject(input: $i) { id } }",
                {"i": {"name": "Bench"}},
                token,
            )
        )["createProject"]["id"]
        environment = (
            await gql(
                "mutation($i: CreateEnvironmentInput!) { createEnvironment(input: $i) { id } }",
                {"i": {"projectId": project, "name": "Production"}},
                token,
            )
        )["createEnvironment"]["id"]
        secrets: list[str] = []
        scopes = ", ".join(KEY_SCOPES)
        for start in range(0, keys, BATCH):  # BATCH aliased createApiKey fields a request
            fields = " ".join(
                f'k{n}: createApiKey(input: {{environmentId: $e, name: "k{start + n}", '
                f"scopes: [{scopes}], rateLimitPerMinute: {KEY_LIMIT}}}) {{ secret }}"
                for n in range(min(BATCH, keys - start))
            )
            made = await gql(f"mutation($e: ID!) {{ {fields} }}", {"e": environment}, token)
            secrets += [made[f"k{n}"]["secret"] for n in range(len(made))]
    return token, secrets, environment


def _issuer(scratch: str) -> Any:
    """The OAuth issuer the outer process made (see main): generating an RSA key costs a
    different number of instructions each time, which would swamp the difference of two runs."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from seed import Issuer

    folder = Path(os.environ.get(ISSUER_DIR, "") or _make_issuer(scratch))
    key = load_pem_private_key((folder / "issuer.pem").read_bytes(), password=None)
    return Issuer(jwks_path=folder / "jwks.json", private_key=key)  # type: ignore[arg-type]


def _make_issuer(parent: str | None = None) -> str:
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
    )
    from seed import Issuer

    folder = Path(tempfile.mkdtemp(prefix="keyplane-instr-issuer-", dir=parent))
    issuer = Issuer.create(folder / "jwks.json")
    pem = issuer.private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    (folder / "issuer.pem").write_bytes(pem)
    return str(folder)


async def _inner(side: str, scenario: str, requests: int) -> None:
    from reference import ENVIRONMENT_ID, KEY_PAGE

    credential, query, reference_query = SCENARIOS[scenario]
    variables: dict[str, str] = {}
    headers: list[list[tuple[bytes, bytes]]] = [[]]  # one list per credential, in rotation
    data = ""
    if side == "reference":
        import reference

        app: Any = reference.create_app()
        query = reference_query
        variables = {"e": ENVIRONMENT_ID}
    else:
        from seed import EMAIL

        from keyplane.app import create_app
        from keyplane.settings import Settings

        data = tempfile.mkdtemp(prefix="keyplane-instr-")
        environ = {
            "KEYPLANE_ENV": "production",
            "KEYPLANE_DATA_DIR": data,
            "KEYPLANE_JWT_SECRET": "bench-secret-" + "x" * 32,
            "KEYPLANE_RATE_LIMITS": LIMITS,
            # Seeding (25 createApiKey a request) under valgrind on a busy machine can pass
            # the default 10 s; the limit's value costs a request nothing.
            "KEYPLANE_OPERATION_TIMEOUT_SECONDS": "3600",
        }
        origin = os.environ.get(CORS_ORIGIN, "")
        if origin:
            environ["KEYPLANE_CORS_ORIGINS"] = origin
        issuer = _issuer(data) if credential == "oauth" else None
        if issuer is not None:
            environ |= issuer.environ()
        app = create_app(Settings.from_environ(environ))
        keep = await _lifespan(app)  # noqa: F841  (the lifespan runs as long as we do)
        token, secrets, environment = await _seed(app, KEYS)
        if issuer is not None:
            token = issuer.token(email=EMAIL)
        if credential:
            values = secrets if credential == "key" else [token]
            headers = [[(b"authorization", f"Bearer {value}".encode())] for value in values]
        if origin and os.environ.get(SEND_ORIGIN) == "1":
            for each in headers:
                each.append((b"origin", origin.encode()))
        variables = {"e": environment}
    if query == "PAGE":
        query = KEY_PAGE % 20
    operation = {"query": query, "variables": variables}
    body = json.dumps([operation] * BATCH if scenario.startswith("batch") else operation).encode()
    for each in headers:  # every credential once, before counting: both runs do it
        if await _call(app, body, each) != 200:
            raise RuntimeError(f"{side}: {scenario} did not answer 200")
    turn = iter(range(1 << 62))

    async def worker(count: int) -> None:
        for _ in range(count):
            await _call(app, body, headers[next(turn) % len(headers)])

    await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    if data:
        shutil.rmtree(data, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)  # skip the shutdown: it is not part of any request


async def _limit_keys(app: Any, limit: int) -> list[list[tuple[bytes, bytes]]]:
    """LIMIT_KEYS keys overridden to `limit`/minute, each window filled to LIMIT_HEADROOM below
    its limit through the limiter's own storage: one Authorization header list per key."""
    import httpx

    token, _, environment = await _seed(app, 0)
    transport = httpx.ASGITransport(app=app)
    secrets = []
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for n in range(LIMIT_KEYS):
            answer = await client.post(
                "/graphql",
                json={
                    "query": "mutation($i: CreateApiKeyInput!) { createApiKey(input: $i) "
                    "{ secret } }",
                    "variables": {
                        "i": {
                            "environmentId": environment,
                            "name": f"limited{n}",
                            "scopes": ["VIEW_ANALYTICS", "MANAGE_PROJECT"],
                            "rateLimitPerMinute": limit,
                        }
                    },
                },
                headers={"Authorization": f"Bearer {token}"},
            )
            secrets.append(answer.json()["data"]["createApiKey"]["secret"])
    services = app.state.services
    headers = [[(b"authorization", f"Bearer {secret}".encode())] for secret in secrets]
    for header in headers:
        principal = await services.authenticator.authenticate(header[0][1].decode())
        bucket = services.rates.bucket_for(principal, "127.0.0.1")
        assert bucket.amount == limit, bucket
        await services.limiter.charge([(bucket, limit - LIMIT_HEADROOM)])
    return headers


async def _inner_limits(side: str, requests: int) -> None:
    from dataclasses import replace

    from keyplane.app import create_app
    from keyplane.settings import Settings

    limit = LIMIT_SIDES[side]
    data = tempfile.mkdtemp(prefix="keyplane-instr-")
    environ = {
        "KEYPLANE_ENV": "production",
        "KEYPLANE_DATA_DIR": data,
        "KEYPLANE_JWT_SECRET": "bench-secret-" + "x" * 32,
        "KEYPLANE_RATE_LIMITS": LIMITS,
        "KEYPLANE_OPERATION_TIMEOUT_SECONDS": "3600",  # valgrind is ~50x slower
        # Each key is verified once and then trusted from memory for this long (30 s by
        # default). A valgrind run takes about a minute, so with the default the 100 keys were
        # looked up again, each a database read, a number of times that hangs on the machine's
        # speed: the ratio moved by 13 % between runs (0.905 to 1.033). Serving 10,000 a
        # minute, a key is looked up again once in 5,000 requests: nothing a ratio could see.
        "KEYPLANE_CREDENTIAL_CACHE_SECONDS": "3600",
    }
    # No usage flush while counting: how many run depends on the wall-clock time a run takes
    # under valgrind, and each writes 100 keys' counters (~millions of instructions).
    settings = replace(Settings.from_environ(environ), usage_flush_seconds=3600)
    app = create_app(settings)
    keep = await _lifespan(app)  # noqa: F841  (the lifespan runs as long as we do)
    keys = await _limit_keys(app, limit)
    body = json.dumps({"query": LIMIT_QUERY}).encode()
    for header in keys:  # every key verified and cached once, as in a warm server
        if await _call(app, body, header) != 200:
            raise RuntimeError(f"{side}: the keyed viewer did not answer 200")
    turn = 0

    async def worker(count: int) -> None:
        nonlocal turn
        for _ in range(count):
            turn += 1
            if await _call(app, body, keys[turn % LIMIT_KEYS]) != 200:
                raise RuntimeError(f"{side}: a keyed viewer near its limit was refused")

    await asyncio.gather(*(worker(requests // CONCURRENCY) for _ in range(CONCURRENCY)))
    shutil.rmtree(data, ignore_errors=True)
    sys.stdout.flush()
    os._exit(0)


def limits_table(requests: int) -> None:
    """Keyed viewer near a 100/minute limit vs near a 10,000/minute one (target: ratio >= 0.95)."""
    short, long = CONCURRENCY, max(2 * CONCURRENCY, requests - requests % CONCURRENCY)
    figures = {side: _per_request("limits", side, short, long) for side in LIMIT_SIDES}
    small, large = figures.values()
    print()
    print(
        f"| {LIMIT_KEYS} keys rotating, near their limit | 100/minute instr/req "
        "| 10,000/minute instr/req | ratio (100/min / 10,000/min) |"
    )
    print("|---|---|---|---|")
    print(f"| keyed viewer | {small:,.0f} | {large:,.0f} | **{small / large:.3f}** |", flush=True)


# --- outside: run the sides under valgrind and subtract --------------------------------------


def _instructions(side: str, scenario: str, requests: int) -> int:
    command = [
        "valgrind",
        "--tool=cachegrind",
        "--cache-sim=no",
        "--cachegrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--inner",
        side,
        scenario,
        str(requests),
    ]
    # One hash seed for every run: str hashes, and with them the probing of every dict and
    # set keyed by strings, differ from one process to the next under a random seed.
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    found = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"{side} / {scenario}: valgrind failed\n{done.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def _per_request(side: str, scenario: str, short: int, long: int) -> float:
    with ThreadPoolExecutor(max_workers=2) as pool:
        few, many = pool.map(lambda n: _instructions(side, scenario, n), (short, long))
    return (many - few) / (long - short)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run only scenarios whose name contains this text")
    parser.add_argument("--requests", type=int, default=320, help="the long run's requests")
    parser.add_argument("--cors-origin", help="list this origin in KEYPLANE_CORS_ORIGINS")
    parser.add_argument(
        "--send-origin", action="store_true", help="send it on every request, as a browser does"
    )
    parser.add_argument("--inner", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cors_origin:
        os.environ[CORS_ORIGIN] = args.cors_origin
        os.environ[SEND_ORIGIN] = "1" if args.send_origin else ""
    sys.path.insert(0, str(BENCH_DIR))
    if args.inner:
        side, scenario, requests = args.inner
        if side == "limits":
            asyncio.run(_inner_limits(scenario, int(requests)))
        else:
            asyncio.run(_inner(side, scenario, int(requests)))
        return
    if shutil.which("valgrind") is None:
        parser.exit(2, "bench/instructions.py needs valgrind (Debian: apt install valgrind)\n")
    short = CONCURRENCY
    os.environ[ISSUER_DIR] = issuer_dir = _make_issuer()  # one key for every run (_issuer)
    print("| scenario | keyplane instr/req | reference instr/req | ratio (reference / keyplane) |")
    print("|---|---|---|---|")
    try:
        for scenario in SCENARIOS:
            if args.only and args.only not in scenario:
                continue
            # A page or a batch costs ~15x a viewer: fewer requests count as precisely.
            heavy = scenario.startswith(("list", "batch"))
            long = 4 * CONCURRENCY if heavy else args.requests
            long = max(2 * CONCURRENCY, long - long % CONCURRENCY)
            keyplane = _per_request("keyplane", scenario, short, long)
            reference = _per_request("reference", scenario, short, long)
            ratio = reference / keyplane
            print(
                f"| {scenario} | {keyplane:,.0f} | {reference:,.0f} | **{ratio:.2f}** |", flush=True
            )
        if not args.only or args.only in "limits near 10,000/minute":
            limits_table(args.requests)
    finally:
        shutil.rmtree(issuer_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
