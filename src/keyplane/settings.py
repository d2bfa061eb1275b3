"""Settings read once from `KEYPLANE_*` environment variables and validated all at once."""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

from starlette.datastructures import Secret

from keyplane.ratelimit.client_ip import Network, parse_proxies
from keyplane.ratelimit.tiers import Tiers, parse_tiers
from keyplane.render.limits import RenderLimits, read_render_limits

E = TypeVar("E", bound=StrEnum)

MIN_JWT_SECRET_BYTES = 32
RATE_LIMIT_STORAGES = (
    "memory://",
    "redis://",
    "rediss://",
    "redis+cluster://",
    "redis+sentinel://",
)
JWT_SECRET_FILE = "jwt-secret"


class SettingsError(Exception):
    """Every problem found in the environment, listed together."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


class RunMode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SignupPolicy(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True)
class OAuthSettings:
    issuer: str
    audience: str
    jwks: str  # an http(s) URL or a local file path


@dataclass(frozen=True)
class Settings:
    mode: RunMode
    data_dir: Path
    database_url: str
    jwt_secret: Secret
    jwt_ttl_seconds: int = 3600
    signup: SignupPolicy = SignupPolicy.OPEN
    oauth: OAuthSettings | None = None
    rate_limits: Tiers = field(default_factory=lambda: parse_tiers("", []))
    rate_limit_storage: str = "memory://"
    rate_limit_fail_closed: bool = False
    trusted_proxies: tuple[Network, ...] = ()
    max_batch: int = 25
    usage_retention_days: int = 30
    activity_retention_days: int = 90
    usage_flush_seconds: float = 1.0
    # How long a verified key or session may be reused while the credentials' version holds
    # (0: read every request's credential from the database).
    credential_cache_seconds: int = 30
    render: RenderLimits = field(default_factory=RenderLimits)
    # Seconds a connection may take to send a request head (read by keyplane.connections too).
    request_head_timeout: int = 10
    # Requests one worker processes at once; more get an immediate 503.
    max_in_flight: int = 64

    @property
    def development(self) -> bool:
        return self.mode is RunMode.DEVELOPMENT

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, create_secret: bool = True
    ) -> Settings:
        env = os.environ if environ is None else environ
        problems: list[str] = []

        mode = _enum(env, "KEYPLANE_ENV", RunMode, RunMode.DEVELOPMENT, problems)
        signup = _enum(env, "KEYPLANE_SIGNUP", SignupPolicy, SignupPolicy.OPEN, problems)
        data_dir = Path(env.get("KEYPLANE_DATA_DIR", "./data/"))
        database_url = env.get("KEYPLANE_DATABASE_URL", "").strip()
        if database_url and not database_url.startswith(("sqlite://", "postgres://", "asyncpg://")):
            problems.append(
                "KEYPLANE_DATABASE_URL must start with sqlite://, postgres:// or asyncpg://"
            )

        ttl = _int(env, "KEYPLANE_JWT_TTL_SECONDS", 3600, 60, 86400, problems)
        rate_limits = parse_tiers(env.get("KEYPLANE_RATE_LIMITS", ""), problems)
        storage = env.get("KEYPLANE_RATE_LIMIT_STORAGE", "").strip() or "memory://"
        if not storage.startswith(RATE_LIMIT_STORAGES):
            problems.append(
                "KEYPLANE_RATE_LIMIT_STORAGE must be memory:// or a Redis URL (redis://host:6379/0)"
            )
        fail_closed = _flag(env, "KEYPLANE_RATE_LIMIT_FAIL_CLOSED", problems)
        proxies = parse_proxies(env.get("KEYPLANE_TRUSTED_PROXIES", ""), problems)
        max_batch = _int(env, "KEYPLANE_MAX_BATCH", 25, 1, 100, problems)
        retention = _int(env, "KEYPLANE_USAGE_RETENTION_DAYS", 30, 1, 3660, problems)
        activity_retention = _int(env, "KEYPLANE_ACTIVITY_RETENTION_DAYS", 90, 1, 3660, problems)
        credential_cache = _int(env, "KEYPLANE_CREDENTIAL_CACHE_SECONDS", 30, 0, 3600, problems)
        head_timeout = _int(env, "KEYPLANE_REQUEST_HEAD_TIMEOUT", 10, 1, 300, problems)
        max_in_flight = _int(env, "KEYPLANE_MAX_IN_FLIGHT", 64, 1, 100_000, problems)

        secret_text = env.get("KEYPLANE_JWT_SECRET")
        if secret_text is not None and len(secret_text.encode()) < MIN_JWT_SECRET_BYTES:
            problems.append(f"KEYPLANE_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes")

        oauth = None
        oauth_values = {
            name: env.get(f"KEYPLANE_OAUTH_{name.upper()}", "").strip()
            for name in ("issuer", "audience", "jwks")
        }
        if any(oauth_values.values()):
            missing = [f"KEYPLANE_OAUTH_{n.upper()}" for n, v in oauth_values.items() if not v]
            if missing:
                problems.append("OAuth needs all three settings; missing " + ", ".join(missing))
            else:
                oauth = OAuthSettings(**oauth_values)

        if secret_text is None and not create_secret:
            problems.append("KEYPLANE_JWT_SECRET is not set")

        render = read_render_limits(env, problems)
        if problems:
            raise SettingsError(problems)

        if not database_url:
            database_url = f"sqlite://{data_dir / 'keyplane.sqlite3'}"
        if secret_text is None:
            secret_text = ensure_jwt_secret(data_dir)
        return cls(
            mode=mode,
            data_dir=data_dir,
            database_url=database_url,
            jwt_secret=Secret(secret_text),
            jwt_ttl_seconds=ttl,
            signup=signup,
            oauth=oauth,
            rate_limits=rate_limits,
            rate_limit_storage=storage,
            rate_limit_fail_closed=fail_closed,
            trusted_proxies=proxies,
            max_batch=max_batch,
            usage_retention_days=retention,
            activity_retention_days=activity_retention,
            credential_cache_seconds=credential_cache,
            render=render,
            request_head_timeout=head_timeout,
            max_in_flight=max_in_flight,
        )


def ensure_jwt_secret(data_dir: Path) -> str:
    """Return the data dir's dashboard signing secret, creating it atomically the first time.

    Several workers may call this at once: the secret is written to a private temporary
    file and hard-linked into place, so exactly one value wins and nobody reads half a file.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / JWT_SECRET_FILE
    if not path.exists():
        tmp = data_dir / f".{JWT_SECRET_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


def _int(
    env: Mapping[str, str], name: str, default: int, low: int, high: int, problems: list[str]
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        problems.append(f"{name} must be a whole number from {low} to {high} (got {raw!r})")
        return default
    return value


def _flag(env: Mapping[str, str], name: str, problems: list[str]) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    problems.append(f"{name} must be 1 or 0 (got {raw!r})")
    return False


def _enum(env: Mapping[str, str], name: str, kind: type[E], default: E, problems: list[str]) -> E:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return kind(raw.strip().lower())
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        problems.append(f"{name} must be one of {allowed} (got {raw!r})")
        return default
