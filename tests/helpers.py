"""Test helpers: a GraphQL-over-HTTP client, the tenant most tests start from, a movable clock
and a fake OAuth issuer."""

from __future__ import annotations

import functools
import itertools
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from keyplane.auth.dashboard import utcnow

DEFAULT_MAX_COST = 25_000
# The body of the 503 a busy worker answers (its in-flight limit, or overloaded).
BUSY_BODY = {
    "data": None,
    "errors": [
        {
            "message": "The server is busy; retry shortly.",
            "extensions": {"code": "SERVICE_UNAVAILABLE"},
        }
    ],
}


def cost(requested: int, maximum: int = DEFAULT_MAX_COST) -> dict[str, int]:
    """The `extensions.cost` every GraphQL answer carries."""
    return {"requested": requested, "maximum": maximum}


class Clock:
    """Real time plus an offset the test can move forward."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@functools.cache
def _signing_keys() -> tuple[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]:
    """Made once per test session: a 2048-bit RSA key takes tens of milliseconds."""
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
    )


@dataclass
class OAuthIssuer:
    """Signs RFC 9068 access tokens with keys published in a local JWKS file."""

    jwks_path: Path
    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    issuer: str = "https://issuer.example"
    audience: str = "https://keyplane.example"

    @classmethod
    def create(cls, jwks_path: Path) -> OAuthIssuer:
        rsa_key, ec_key = _signing_keys()
        issuer = cls(jwks_path=jwks_path, rsa_key=rsa_key, ec_key=ec_key)
        rsa_jwk = json.loads(RSAAlgorithm.to_jwk(issuer.rsa_key.public_key()))
        rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
        ec_jwk = json.loads(ECAlgorithm.to_jwk(issuer.ec_key.public_key()))
        ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
        jwks_path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk]}))
        return issuer

    def token(
        self,
        *,
        sub: str = "external-user-1",
        scope: str = "documents:generate templates:manage analytics:view project:manage",
        email: str | None = None,
        email_verified: bool = True,
        alg: str = "RS256",
        typ: str = "at+jwt",
        lifetime: int = 300,
        **overrides: Any,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "client_id": "integration-client",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + lifetime,
            "scope": scope,
        }
        if email is not None:
            claims.update(email=email, email_verified=email_verified)
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        key: Any = self.rsa_key if alg == "RS256" else self.ec_key
        kid = "rsa-1" if alg == "RS256" else "ec-1"
        return jwt.encode(claims, key, algorithm=alg, headers={"typ": typ, "kid": kid})


@dataclass
class Result:
    """One GraphQL response over HTTP."""

    status: int
    body: Any
    headers: httpx.Headers

    @property
    def data(self) -> Any:
        return self.body.get("data")

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self.body.get("errors") or [])

    @property
    def codes(self) -> list[str | None]:
        return [e.get("extensions", {}).get("code") for e in self.errors]

    def ok(self) -> Any:
        assert self.status == 200, (self.status, self.body)
        assert not self.errors, self.errors
        return self.data


class Answer(Protocol):
    """One GraphQL answer, over HTTP (`Result`) or through the schema (`schema_client.Outcome`)."""

    @property
    def data(self) -> Any: ...

    @property
    def errors(self) -> list[dict[str, Any]]: ...

    @property
    def codes(self) -> list[str | None]: ...

    def ok(self) -> Any: ...


_unique_counter = itertools.count(1)


def unique(stem: str) -> str:
    """A name no other row of this run (or of an earlier run sharing the database: the
    real-server tests share one that is not emptied) holds."""
    return f"{stem}{next(_unique_counter)}-{uuid.uuid4().hex[:8]}"


class Client:
    """What a client does through GraphQL, whichever way its `gql` sends the document: over
    HTTP (`Api`) or straight through the schema (`schema_client.SchemaApi`)."""

    oauth: OAuthIssuer  # signs the OAuth access tokens this client may present

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> Answer:
        raise NotImplementedError

    async def sign_up(self, email: str | None = None, password: str = "correct horse") -> str:
        email = email or unique("user") + "@example.com"
        result = await self.gql(
            "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken } }",
            {"input": {"email": email, "password": password, "name": email.split("@")[0]}},
        )
        token: str = result.ok()["signUp"]["accessToken"]
        return token

    async def user_id(self, token: str) -> str:
        data = (await self.gql("{ viewer { user { id } } }", token=token)).ok()
        return str(data["viewer"]["user"]["id"])

    async def create_project(self, token: str, name: str | None = None) -> str:
        result = await self.gql(
            "mutation($input: CreateProjectInput!) { createProject(input: $input) { id } }",
            {"input": {"name": name or unique("project")}},
            token=token,
        )
        return str(result.ok()["createProject"]["id"])

    async def create_environment(self, token: str, project_id: str, name: str | None = None) -> str:
        result = await self.gql(
            "mutation($input: CreateEnvironmentInput!) { createEnvironment(input: $input) { id } }",
            {"input": {"projectId": project_id, "name": name or unique("env")}},
            token=token,
        )
        return str(result.ok()["createEnvironment"]["id"])

    async def create_key(
        self,
        token: str,
        environment_id: str,
        scopes: list[str] | None = None,
        *,
        name: str = "server",
        expires_at: str | None = None,
    ) -> tuple[str, str]:
        """Returns (key id, secret)."""
        result = await self.gql(
            """mutation($input: CreateApiKeyInput!) {
                 createApiKey(input: $input) { apiKey { id } secret }
               }""",
            {
                "input": {
                    "environmentId": environment_id,
                    "name": name,
                    "scopes": scopes or ["MANAGE_PROJECT"],
                    "expiresAt": expires_at,
                }
            },
            token=token,
        )
        payload = result.ok()["createApiKey"]
        return str(payload["apiKey"]["id"]), str(payload["secret"])


@dataclass
class Api(Client):
    client: httpx.AsyncClient
    oauth: OAuthIssuer

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Result:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        response = await self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=sent
        )
        return Result(response.status_code, response.json(), response.headers)


@dataclass(frozen=True)
class Tenant:
    """A user who owns a project with one or more environments (the first is `environment_id`),
    and the dashboard session token they act with."""

    token: str
    user_id: str
    email: str
    member_id: str  # the owner's membership
    project_id: str
    environment_ids: tuple[str, ...]

    @property
    def environment_id(self) -> str:
        return self.environment_ids[0]

    @property
    def other_environment_id(self) -> str:
        """The second environment, for tenants made with two."""
        return self.environment_ids[1]


async def new_tenant(
    api: Client, email: str | None = None, *, environments: Sequence[str | None] = (None,)
) -> Tenant:
    """A tenant made through GraphQL (signUp, createProject, createEnvironment), as a client
    would, so that it works against a real `keyplane serve` too; one environment per entry of
    `environments`, named by it (None: a unique name)."""
    email = email or unique("user") + "@example.com"
    signed_up = await api.gql(
        "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken user { id } } }",
        {"input": {"email": email, "password": "correct horse", "name": email.split("@")[0]}},
    )
    payload = signed_up.ok()["signUp"]
    token, user_id = str(payload["accessToken"]), str(payload["user"]["id"])
    project_id = await api.create_project(token)
    environment_ids = [await api.create_environment(token, project_id, n) for n in environments]
    members = await api.gql(
        "query($p: ID!) { members(projectId: $p) { id } }", {"p": project_id}, token=token
    )
    [owner] = members.ok()["members"]
    return Tenant(
        token=token,
        user_id=user_id,
        email=email,
        member_id=str(owner["id"]),
        project_id=project_id,
        environment_ids=tuple(environment_ids),
    )


@dataclass(frozen=True)
class Operation:
    """One root field as the access tests call it: its document, the field it answers, and its
    variables, made from what the test file's table says (ids, a tenant...)."""

    document: str
    field: str
    variables: Callable[..., dict[str, Any]]
    # What a caller refused gets: the refused field alone is null (partial data), unless the
    # table says otherwise (a nested field nulls itself inside its parent).
    refused: dict[str, Any] | None = None

    def refused_data(self) -> dict[str, Any]:
        return self.refused if self.refused is not None else {self.field: None}


def each_operation(operations: Mapping[str, Any]) -> pytest.MarkDecorator:
    """Parametrizes `operation` over a table of operations, each test id its name."""
    return pytest.mark.parametrize("operation", list(operations.values()), ids=list(operations))


def in_future(days: float = 1) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()
