"""Bench data: an account, a project, environments and keys made through keyplane's public
GraphQL API; an OAuth issuer whose tokens keyplane accepts; and many keys written straight to
the database with keyplane's own functions (for the memory measurement)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from keyplane.auth.api_key import display_prefix, generate_secret, hash_secret
from keyplane.db import tortoise_config
from keyplane.models import ApiKey
from keyplane.permissions.scopes import Scope, encode_scopes

EMAIL = "bench@example.com"
PASSWORD = "correct horse battery staple"
KEY_SCOPES = ["GENERATE_DOCUMENTS", "VIEW_ANALYTICS"]
ALIASES_PER_REQUEST = 25


@dataclass(frozen=True)
class Issuer:
    """Signs RFC 9068 access tokens (RS256) with a key published in a local JWKS file."""

    jwks_path: Path
    private_key: rsa.RSAPrivateKey
    issuer: str = "https://issuer.bench.example"
    audience: str = "https://keyplane.bench.example"

    @classmethod
    def create(cls, jwks_path: Path) -> Issuer:
        issuer = cls(
            jwks_path=jwks_path,
            private_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
        )
        public = json.loads(RSAAlgorithm.to_jwk(issuer.private_key.public_key()))
        public.update(kid="bench-rsa-1", alg="RS256", use="sig")
        jwks_path.write_text(json.dumps({"keys": [public]}))
        return issuer

    def environ(self) -> dict[str, str]:
        return {
            "KEYPLANE_OAUTH_ISSUER": self.issuer,
            "KEYPLANE_OAUTH_AUDIENCE": self.audience,
            "KEYPLANE_OAUTH_JWKS": str(self.jwks_path),
        }

    def token(self, *, email: str, lifetime: int = 86_400) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "bench-subject-1",
            "client_id": "bench-client",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + lifetime,
            "scope": "documents:generate templates:manage analytics:view project:manage",
            "email": email,
            "email_verified": True,
        }
        return jwt.encode(
            claims,
            self.private_key,
            algorithm="RS256",
            headers={"typ": "at+jwt", "kid": "bench-rsa-1"},
        )


@dataclass
class Seeded:
    """What the scenarios need: credentials and the ids they name."""

    jwt: str
    oauth_token: str
    user_id: str
    project_id: str
    environment_id: str  # holds exactly the seeded keys, for the list scenarios
    churn_environment_id: str  # receives the keys createApiKey makes
    scale_environment_id: str  # receives the keys of the memory measurement
    secrets: list[str] = field(default_factory=list)


class GraphQLError(RuntimeError):
    pass


def gql(
    client: httpx.Client,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    token: str | None = None,
) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    body = response.json()
    if response.status_code != 200 or body.get("errors"):
        raise GraphQLError(f"HTTP {response.status_code}: {json.dumps(body)[:500]}")
    return body["data"]


def seed(base_url: str, issuer: Issuer, *, keys: int) -> Seeded:
    with httpx.Client(base_url=base_url, timeout=30.0) as client:
        signed_up = gql(
            client,
            "mutation($input: SignUpInput!) { signUp(input: $input) { accessToken user { id } } }",
            {"input": {"email": EMAIL, "password": PASSWORD, "name": "Bench"}},
        )["signUp"]
        token = signed_up["accessToken"]
        project_id = gql(
            client,
            "mutation($input: CreateProjectInput!) { createProject(input: $input) { id } }",
            {"input": {"name": "Bench"}},
            token=token,
        )["createProject"]["id"]
        environments = {}
        for name in ("Production", "Churn", "Scale"):
            environments[name] = gql(
                client,
                "mutation($input: CreateEnvironmentInput!) "
                "{ createEnvironment(input: $input) { id } }",
                {"input": {"projectId": project_id, "name": name}},
                token=token,
            )["createEnvironment"]["id"]
        seeded = Seeded(
            jwt=token,
            oauth_token=issuer.token(email=EMAIL),
            user_id=signed_up["user"]["id"],
            project_id=project_id,
            environment_id=environments["Production"],
            churn_environment_id=environments["Churn"],
            scale_environment_id=environments["Scale"],
        )
        for start in range(0, keys, ALIASES_PER_REQUEST):
            count = min(ALIASES_PER_REQUEST, keys - start)
            seeded.secrets += _create_keys(client, token, seeded.environment_id, start, count)
    return seeded


def _create_keys(
    client: httpx.Client, token: str, environment_id: str, start: int, count: int
) -> list[str]:
    """`count` keys in one mutation of aliased createApiKey fields."""
    fields = " ".join(
        f'k{n}: createApiKey(input: {{environmentId: $e, name: "bench key {start + n}", '
        f"scopes: [{', '.join(KEY_SCOPES)}]}}) {{ secret }}"
        for n in range(count)
    )
    data = gql(client, f"mutation($e: ID!) {{ {fields} }}", {"e": environment_id}, token=token)
    return [data[f"k{n}"]["secret"] for n in range(count)]


async def insert_keys(
    database_url: str, *, environment_id: str, project_id: str, user_id: str, count: int
) -> list[str]:
    """Write `count` keys straight to the database, as createApiKey would store them."""
    from tortoise import Tortoise

    secrets = [generate_secret() for _ in range(count)]
    scopes = encode_scopes({Scope(scope) for scope in KEY_SCOPES})
    now = datetime.now(UTC)
    await Tortoise.init(config=tortoise_config(database_url))
    try:
        await ApiKey.bulk_create(
            [
                ApiKey(
                    environment_id=environment_id,
                    project_id=project_id,
                    created_by_id=user_id,
                    name=f"scale key {n}",
                    prefix=display_prefix(secret),
                    secret_hash=hash_secret(secret),
                    scopes=scopes,
                    created_at=now - timedelta(microseconds=n),
                )
                for n, secret in enumerate(secrets)
            ],
            batch_size=1000,
        )
    finally:
        await Tortoise.close_connections()
    return secrets
