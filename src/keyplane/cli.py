"""`keyplane serve | migrate`: the command line."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any, NoReturn

import uvicorn

from keyplane.db import apply_migrations_sync
from keyplane.listeners import balanced, run_workers
from keyplane.permissions.checks import UnknownCheck, select_checks
from keyplane.redaction import log_config
from keyplane.settings import Settings, SettingsError, database_url_from

APP = "keyplane.main:app_factory"


def _settings() -> Settings:
    try:
        return Settings.from_environ()
    except SettingsError as exc:
        _settings_error(exc)


def _settings_error(exc: SettingsError) -> NoReturn:
    print(f"keyplane: {exc}", file=sys.stderr)
    raise SystemExit(2) from exc


def serve(args: argparse.Namespace) -> None:
    if args.dev:
        os.environ["KEYPLANE_ENV"] = "development"
    # Read (and on first start create) the shared secret and migrate before any worker forks,
    # so that workers find both ready and never race each other.
    settings = _settings()
    if args.workers > 1 and settings.rate_limit_storage.startswith("memory://"):
        print(
            "keyplane: refusing to start: with --workers > 1 and in-process rate-limit storage "
            "(KEYPLANE_RATE_LIMIT_STORAGE=memory://) every worker would keep its own counts, "
            f"multiplying each limit by {args.workers}. Set KEYPLANE_RATE_LIMIT_STORAGE to a "
            "Redis URL (redis://host:6379/0), or run one worker.",
            file=sys.stderr,
        )
        raise SystemExit(2)
    try:  # a check KEYPLANE_CHECKS names but nothing installs stops here, not in each worker
        select_checks(settings.checks)
    except UnknownCheck as exc:
        print(f"keyplane: refusing to start: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    apply_migrations_sync(settings.database_url)
    if settings.database_url.startswith("sqlite://") and args.workers > 1:
        print(
            "keyplane: note: several workers share one SQLite file; writes serialise. "
            "Use PostgreSQL (KEYPLANE_DATABASE_URL) to scale out.",
            file=sys.stderr,
        )
    if settings.development:
        print(f"keyplane: GraphiQL on http://{args.host}:{args.port}/graphql", file=sys.stderr)
    options: dict[str, Any] = dict(
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_config=log_config(),  # uvicorn's, with secrets redacted on every handler
        # Client addresses come from the socket unless proxies are configured explicitly.
        proxy_headers=False,
        log_level="info",
        # uvicorn's own HTTP/1.1 protocol plus a deadline for request heads (connections.py).
        http="keyplane.connections:HeadDeadlineProtocol",
        # An idle keep-alive connection is closed after 5 s (uvicorn's default, said here so
        # that it stays short whatever uvicorn's default becomes).
        timeout_keep_alive=5,
    )
    if args.workers > 1 and balanced():
        # Each worker listens on a socket of its own, so connections spread (listeners.py).
        with contextlib.suppress(KeyboardInterrupt):
            run_workers(uvicorn.Config(APP, **options))
        return
    uvicorn.run(APP, **options)


def migrate(args: argparse.Namespace) -> None:
    # Only the database matters here: no JWT secret is needed to migrate.
    problems: list[str] = []
    database_url = database_url_from(os.environ, problems)
    if problems:
        _settings_error(SettingsError(problems))
    apply_migrations_sync(database_url)
    print("keyplane: database schema is up to date")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="keyplane", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="serve the GraphQL API")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8000)
    serve_parser.add_argument("--workers", type=int, default=1)
    serve_parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode (GraphiQL, GET queries, open /metrics); production otherwise",
    )
    serve_parser.add_argument("--access-log", action="store_true", help="log every request")
    serve_parser.set_defaults(func=serve)

    migrate_parser = commands.add_parser("migrate", help="apply database migrations")
    migrate_parser.set_defaults(func=migrate)

    args = parser.parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        parser.error("--workers must be at least 1")
    args.func(args)


if __name__ == "__main__":
    main()
