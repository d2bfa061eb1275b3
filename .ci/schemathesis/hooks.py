"""schemathesis hooks for keyplane: the check that every answer is coded, and the credential.

Loaded by schemathesis itself (`hooks` in schemathesis.toml), once per run; `run.py` picks the
run's credential through KEYPLANE_CI_AUTH:

    anonymous   no Authorization header
    jwt         a dashboard session: logs in as KEYPLANE_CI_EMAIL / KEYPLANE_CI_PASSWORD
    api_key     an all-scope key, created by that same user in a new environment of
                KEYPLANE_CI_PROJECT_ID at each fetch

The credential is fetched again every REFRESH_SECONDS and after any 401, since the fuzzer
may well log its own session out, revoke or rotate its own key, or lower its own key's limit:
those are legitimate answers, and a fresh credential keeps the rest of the run meaningful.
The key's environment is new at each fetch because an all-scope key may also set its own
environment's key policy (`updateEnvironmentPolicy`, e.g. a maximum lifetime), which would
then refuse the next fetch's key, made without an expiry.
"""

from __future__ import annotations

import atexit
import json
import os
from typing import Any
from uuid import uuid4

import graphql
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

# The error codes keyplane answers on purpose (src/keyplane/errors.py and the HTTP layer).
# Other codes pass too (a new code is not a crash), but each is counted in the summary.
EXPECTED_CODES = frozenset(
    {"NOT_FOUND", "FORBIDDEN", "UNAUTHENTICATED", "BAD_USER_INPUT", "CONFLICT", "RATE_LIMITED"}
)
REFRESH_SECONDS = 10
ALL_SCOPES = ["GENERATE_DOCUMENTS", "MANAGE_TEMPLATES", "VIEW_ANALYTICS", "MANAGE_PROJECT"]

LOG_IN = """mutation($email: String!, $password: String!) {
  logIn(input: {email: $email, password: $password}) { accessToken }
}"""
CREATE_ENVIRONMENT = """mutation($projectId: ID!, $name: String!) {
  createEnvironment(input: {projectId: $projectId, name: $name}) { id }
}"""
CREATE_KEY = """mutation($environmentId: ID!, $scopes: [Scope!]!) {
  createApiKey(input: {environmentId: $environmentId, name: "schemathesis", scopes: $scopes}) {
    secret
  }
}"""


def _json_literals() -> st.SearchStrategy[graphql.ValueNode]:
    """Any JSON value as a GraphQL literal: `generateDocument`'s `data: JSON!`."""
    names = st.from_regex(r"\A[_A-Za-z][_0-9A-Za-z]{0,11}\Z")
    leaves = st.one_of(
        st.just(nodes.Null),
        st.booleans().map(nodes.Boolean),
        st.integers().map(nodes.Int),
        st.floats(allow_nan=False, allow_infinity=False).map(nodes.Float),
        st.text(max_size=40).map(nodes.String),
    )

    def containers(
        children: st.SearchStrategy[graphql.ValueNode],
    ) -> st.SearchStrategy[graphql.ValueNode]:
        fields = st.dictionaries(names, children, max_size=5).map(
            lambda entries: [
                graphql.ObjectFieldNode(name=graphql.NameNode(value=key), value=value)
                for key, value in entries.items()
            ]
        )
        return st.one_of(st.lists(children, max_size=5).map(nodes.List), fields.map(nodes.Object))

    return st.recursive(leaves, containers, max_leaves=20)


schemathesis.graphql.scalar("JSON", _json_literals())


def problems_in(status: int, body: bytes) -> list[str]:
    """Why an answer is a failure: a 5xx, an INTERNAL code, or an error without a code."""
    problems = []
    if status >= 500:
        problems.append(f"HTTP {status}")
    try:
        payload = json.loads(body)
    except ValueError:
        if status >= 400:
            problems.append(f"HTTP {status} with a body that is not JSON: {body[:200]!r}")
        return problems
    errors = payload.get("errors") if isinstance(payload, dict) else None
    for error in errors or []:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        code = extensions.get("code") if isinstance(extensions, dict) else None
        if code is None:
            problems.append(f"error without extensions.code: {json.dumps(error)[:300]}")
        elif code == "INTERNAL":
            problems.append(f"INTERNAL error: {json.dumps(error)[:300]}")
    return problems


def codes_in(body: bytes) -> list[str]:
    try:
        payload = json.loads(body)
    except ValueError:
        return []
    errors = payload.get("errors") if isinstance(payload, dict) else None
    return [
        str((error.get("extensions") or {}).get("code"))
        for error in errors or []
        if isinstance(error, dict)
    ]


SEEN_CODES: dict[str, int] = {}


@schemathesis.check
def keyplane_coded_errors(ctx: Any, response: Any, case: Any) -> bool | None:
    """Every answer is a success or a coded refusal: never a 5xx, INTERNAL or an uncoded error."""
    for code in codes_in(response.content):
        SEEN_CODES[code] = SEEN_CODES.get(code, 0) + 1
    problems = problems_in(response.status_code, response.content)
    if problems:
        raise AssertionError("; ".join(problems))
    return None


def _write_tally() -> None:
    """The codes seen, for run.py's summary (one file per run)."""
    tally = os.environ.get("KEYPLANE_CI_CODES_FILE")
    if tally:
        with open(tally, "w") as handle:
            json.dump(SEEN_CODES, handle, sort_keys=True)


atexit.register(_write_tally)


def _graphql(token: str | None, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    answer = requests.post(
        os.environ["KEYPLANE_CI_GRAPHQL_URL"],
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=30,
    )
    answer.raise_for_status()
    payload: dict[str, Any] = answer.json()
    if payload.get("errors"):
        raise RuntimeError(f"keyplane refused {query.split('(')[0]}: {payload['errors']}")
    return payload


def _log_in() -> str:
    payload = _graphql(
        None,
        LOG_IN,
        {"email": os.environ["KEYPLANE_CI_EMAIL"], "password": os.environ["KEYPLANE_CI_PASSWORD"]},
    )
    token: str = payload["data"]["logIn"]["accessToken"]
    return token


class KeyplaneCredential:
    """A fresh dashboard session or all-scope key (see the module docstring)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def get(self, case: Any, ctx: Any) -> str:
        session = _log_in()
        if self.kind == "jwt":
            return session
        where = {"projectId": os.environ["KEYPLANE_CI_PROJECT_ID"], "name": f"key {uuid4().hex}"}
        made = _graphql(session, CREATE_ENVIRONMENT, where)["data"]["createEnvironment"]
        variables = {"environmentId": made["id"], "scopes": ALL_SCOPES}
        secret: str = _graphql(session, CREATE_KEY, variables)["data"]["createApiKey"]["secret"]
        return secret

    def set(self, case: Any, data: str, ctx: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


_KIND = os.environ.get("KEYPLANE_CI_AUTH", "anonymous")
if _KIND in ("jwt", "api_key"):

    @schemathesis.auth(refresh_interval=REFRESH_SECONDS)
    class _Credential(KeyplaneCredential):
        def __init__(self) -> None:
            super().__init__(_KIND)
