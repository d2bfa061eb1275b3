"""Settings read once from `KEYPLANE_*` environment variables and validated all at once."""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

from starlette.datastructures import Secret

from keyplane.ratelimit.client_ip import Network, parse_proxies
from keyplane.ratelimit.tiers import Tiers, parse_tiers
from keyplane.render.limits import RenderLimits, read_render_limits

E = TypeVar("E", bound=StrEnum)

MIN_JWT_SECRET_BYTES = 32
# A random secret of 32 bytes or more uses far more characters than this (a hex one about 16).
MIN_SECRET_DISTINCT_CHARACTERS = 8
# Words that only a copied example holds (compared without case or punctuation), refused in
# production. Each is long enough that a random secret holds it by chance about once in 10^5.
PLACEHOLDER_WORDS = (
    "changeme",
    "replaceme",
    "placeholder",
    "yoursecret",
    "secrethere",
    "example",
    "insecure",
    "notsecret",
    "dummy",
    "fixme",
)
# "..." is the README's own example value; "<your secret>" is how examples mark a blank.
PLACEHOLDER_MARKS = re.compile(r"\.\.\.|\u2026|<[^<>]*>")
RATE_LIMIT_STORAGES = (
    "memory://",
    "redis://",
    "rediss://",
    "redis+cluster://",
    "redis+sentinel://",
)
JWT_SECRET_FILE = "jwt-secret"


@dataclass(frozen=True, slots=True)
class QueryLimits:
    """What one operation may ask for (KEYPLANE_MAX_QUERY_* settings)."""

    max_tokens: int = 5_000
    max_aliases: int = 30
    max_depth: int = 10
    # A key's longest usage series (10,000 points) costs 10,001; a dashboard asking for a key's
    # and its environment's longest series side by side, 20,002; a 100-key page with each
    # key's creator, 302. 25,000 admits all of them and refuses a third such series.
    max_cost: int = 25_000
    max_validation_errors: int = 5


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
    # How many keys (and, apart, sessions, identities, memberships) that cache holds at most.
    credential_cache_size: int = 10_000
    render: RenderLimits = field(default_factory=RenderLimits)
    # What one operation may ask for, and how long it may run (README, "Query limits").
    query_limits: QueryLimits = field(default_factory=QueryLimits)
    operation_timeout_seconds: float = 10.0
    # Bearer token that GET /metrics asks for in production (unset: /metrics answers 404 there).
    metrics_token: Secret | None = None
    # Seconds a connection may take to send a request head (read by keyplane.connections too).
    request_head_timeout: int = 10
    # Requests one worker processes at once (past that, a 503 at once). Every request within
    # that starts at once until one pass of the event loop starts more than 48: then it is
    # overloaded, one starts per pass, up to `max_queued` wait (newest first) and the oldest,
    # or any that waited `max_queue_wait_ms`, are refused (unavailable.py `Admission`;
    # bench/results/overload.md). 0: never paced.
    max_in_flight: int = 64
    max_queued: int = 16
    max_queue_wait_ms: int = 2
    # Browser origins allowed to call the API (cors.py); empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # KEYPLANE_CHECKS: the checks to run, by name and in order (permissions/checks/); None
    # (unset): the built-in ones and those given to create_app, no installed plugin.
    checks: tuple[str, ...] | None = None

    @property
    def development(self) -> bool:
        return self.mode is RunMode.DEVELOPMENT

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, create_secret: bool = True
    ) -> Settings:
        env = os.environ if environ is None else environ
        problems: list[str] = []

        # Production unless told otherwise: a server started bare must not serve GraphiQL,
        # GET queries or open metrics; `keyplane serve --dev` (`make run`) selects development.
        mode = _enum(env, "KEYPLANE_ENV", RunMode, RunMode.PRODUCTION, problems)
        production = mode is RunMode.PRODUCTION
        signup = _enum(env, "KEYPLANE_SIGNUP", SignupPolicy, SignupPolicy.OPEN, problems)
        data_dir = data_dir_from(env)
        database_url = database_url_from(env, problems)

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
        cache_size = _int(env, "KEYPLANE_CREDENTIAL_CACHE_SIZE", 10_000, 1, 10_000_000, problems)
        head_timeout = _int(env, "KEYPLANE_REQUEST_HEAD_TIMEOUT", 10, 1, 300, problems)
        max_in_flight = _int(env, "KEYPLANE_MAX_IN_FLIGHT", 64, 1, 100_000, problems)
        max_queued = _int(env, "KEYPLANE_MAX_QUEUED", 16, 0, 100_000, problems)
        max_queue_wait = _int(env, "KEYPLANE_MAX_QUEUE_WAIT_MS", 2, 1, 60_000, problems)
        cors_origins = parse_origins(env.get("KEYPLANE_CORS_ORIGINS", ""), problems)
        checks = _names(env, "KEYPLANE_CHECKS", problems)

        secret_text = env.get("KEYPLANE_JWT_SECRET")
        if secret_text is not None:
            _check_secret("KEYPLANE_JWT_SECRET", secret_text, production, problems)
        metrics_text = env.get("KEYPLANE_METRICS_TOKEN", "").strip()
        if metrics_text:
            _check_secret("KEYPLANE_METRICS_TOKEN", metrics_text, production, problems)

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

        if secret_text is None and production:
            problems.append(
                f"KEYPLANE_JWT_SECRET is not set: production needs a random secret of at least "
                f"{MIN_JWT_SECRET_BYTES} bytes (or KEYPLANE_ENV=development)"
            )
        elif secret_text is None and not create_secret:
            problems.append("KEYPLANE_JWT_SECRET is not set")

        render = read_render_limits(env, problems)
        defaults = QueryLimits()
        query_limits = QueryLimits(
            max_tokens=_int(
                env, "KEYPLANE_MAX_QUERY_TOKENS", defaults.max_tokens, 100, 1_000_000, problems
            ),
            max_aliases=_int(
                env, "KEYPLANE_MAX_ALIASES", defaults.max_aliases, 0, 10_000, problems
            ),
            max_depth=_int(env, "KEYPLANE_MAX_QUERY_DEPTH", defaults.max_depth, 3, 100, problems),
            max_cost=_int(
                env, "KEYPLANE_MAX_QUERY_COST", defaults.max_cost, 1, 100_000_000, problems
            ),
        )
        timeout = _int(env, "KEYPLANE_OPERATION_TIMEOUT_SECONDS", 10, 1, 3600, problems)
        if problems:
            raise SettingsError(problems)

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
            credential_cache_size=cache_size,
            render=render,
            query_limits=query_limits,
            operation_timeout_seconds=float(timeout),
            metrics_token=Secret(metrics_text) if metrics_text else None,
            request_head_timeout=head_timeout,
            max_in_flight=max_in_flight,
            cors_origins=cors_origins,
            checks=checks,
            max_queued=max_queued,
            max_queue_wait_ms=max_queue_wait,
        )


def data_dir_from(env: Mapping[str, str]) -> Path:
    return Path(env.get("KEYPLANE_DATA_DIR", "./data/"))


def database_url_from(env: Mapping[str, str], problems: list[str]) -> str:
    """The database URL alone (all `keyplane migrate` needs): given, or SQLite in the data dir."""
    database_url = env.get("KEYPLANE_DATABASE_URL", "").strip()
    if not database_url:
        return f"sqlite://{data_dir_from(env) / 'keyplane.sqlite3'}"
    if not database_url.startswith(("sqlite://", "postgres://", "asyncpg://")):
        problems.append(
            "KEYPLANE_DATABASE_URL must start with sqlite://, postgres:// or asyncpg://"
        )
    return database_url


def parse_origins(text: str, problems: list[str]) -> tuple[str, ...]:
    """KEYPLANE_CORS_ORIGINS: comma-separated origins, each exactly as a browser sends it in
    its `Origin` header (`https://app.example.com`, `http://localhost:5173`). A browser sends
    nothing else, so anything else could never match: it is reported, not silently ignored."""
    origins: list[str] = []
    for item in text.split(","):
        origin = item.strip()
        if not origin:
            continue
        if origin == "*":
            problems.append(
                "KEYPLANE_CORS_ORIGINS may not be '*': list each origin that may call the API "
                "from a browser, such as https://app.example.com"
            )
            continue
        why = _origin_problem(origin)
        if why is not None:
            problems.append(
                f"KEYPLANE_CORS_ORIGINS: {origin!r} is not an origin ({why}); write it as "
                "scheme://host or scheme://host:port, such as https://app.example.com"
            )
        elif origin not in origins:
            origins.append(origin)
    return tuple(origins)


def _origin_problem(origin: str) -> str | None:
    """Why `origin` is not one a browser would send, or None."""
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return "it does not parse as scheme://host:port"
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http or https"
    if not parts.hostname or parts.netloc.endswith(":"):
        return "it needs a host, and a port when it has a colon"
    if "@" in parts.netloc:
        return "it may not hold a user name"
    if parts.path or parts.query or parts.fragment or origin.endswith(("?", "#")):
        return "it may not have a path, not even a trailing slash"
    if origin != origin.lower():
        return "browsers send it in lower case"
    if port == {"http": 80, "https": 443}[parts.scheme]:
        return f"browsers leave out the default port {port}"
    return None


def _check_secret(name: str, value: str, production: bool, problems: list[str]) -> None:
    """Every way the secret falls short, each its own line.

    The length holds in every mode (PyJWT warns on every signature with a shorter HMAC key);
    copied examples and low-variety values are refused in production only, so that a
    developer may keep a memorable secret on their own machine."""
    if len(value.encode()) < MIN_JWT_SECRET_BYTES:
        problems.append(f"{name} must be at least {MIN_JWT_SECRET_BYTES} bytes")
    if not production:
        return
    words = "".join(c for c in value.lower() if c.isalnum())
    placeholder = next((w for w in PLACEHOLDER_WORDS if w in words), None)
    if placeholder is None and (mark := PLACEHOLDER_MARKS.search(value)) is not None:
        placeholder = mark.group()
    if placeholder is not None or words in ("secret", "password"):
        problems.append(
            f"{name} looks like a placeholder (it holds {placeholder or words!r}): "
            "use a random value, such as the output of "
            "`python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`"
        )
    distinct = len(set(value))
    if distinct < MIN_SECRET_DISTINCT_CHARACTERS:
        problems.append(
            f"{name} is made of only {distinct} distinct character"
            f"{'' if distinct == 1 else 's'} (a random secret has many more)"
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


def _names(env: Mapping[str, str], name: str, problems: list[str]) -> tuple[str, ...] | None:
    """A comma-separated list of names (None when unset; empty when set to nothing)."""
    raw = env.get(name)
    if raw is None:
        return None
    names = tuple(part.strip() for part in raw.split(",") if part.strip())
    bad = [n for n in names if not n.replace("_", "").replace("-", "").replace(".", "").isalnum()]
    if bad:
        problems.append(f"{name}: {', '.join(map(repr, bad))} is not a check name")
    if len(set(names)) != len(names):
        problems.append(f"{name} names a check twice")
    return names


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
