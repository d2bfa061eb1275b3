"""The GraphiQL page and its assets, all served by keyplane: nothing is loaded from another host.

Development only (production serves no page; see app.py). The page is GET /graphql asked for
as HTML, as before; its scripts and styles are under /graphiql/: the vendored builds
(static/vendor/, refreshed by `make vendor-graphiql`, versions in vendor/versions.json) and
keyplane's own start-up script and style. Each asset URL carries a digest of the file, so the
assets can be cached for a year and a changed file is still fetched at once.

The page's Content-Security-Policy allows scripts, styles and requests to this server only and
no inline script: the start-up code is a file (static/keyplane-graphiql.js), and its settings
are a JSON data block, which is never run.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path

from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent / "static"
PREFIX = "/graphiql"

# The Authorization value the header editor starts with: a placeholder that reads as what to do,
# which the start-up script never sends (a request that still carries it runs anonymously).
PLACEHOLDER_AUTHORIZATION = "Bearer fm_<paste your key>"
DEFAULT_HEADERS = json.dumps({"Authorization": PLACEHOLDER_AUTHORIZATION}, indent=2)
DEFAULT_QUERY = """\
# Who am I? Paste an API key in place of the placeholder
# in the Authorization header below, then run this query
# (Ctrl-Enter). Without a key it runs anonymously.
query Viewer {
  viewer {
    kind
    scopes
    apiKey {
      name
      prefix
      expiresAt
    }
    environment {
      name
    }
    rateLimit {
      tier
      limit
      remaining
      resetAt
    }
  }
}
"""

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        # GraphiQL's dialogs (settings, short keys) add a <style> element to lock the page's
        # scroll; it is refused (one CSP report each time) and nothing is lost: the page never
        # scrolls (keyplane-graphiql.css). Allowing it would take 'unsafe-inline'.
        "style-src 'self'",
        "connect-src 'self'",
        "img-src 'self' data:",
        "font-src 'self' data:",  # graphiql.min.css embeds its fonts as data: URLs
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
# Asset URLs change with their content (asset_url), so a browser may keep them for good.
ASSET_CACHE_CONTROL = "public, max-age=31536000, immutable"

STYLES = ("vendor/graphiql.min.css", "keyplane-graphiql.css")
SCRIPTS = (
    "vendor/react.production.min.js",
    "vendor/react-dom.production.min.js",
    "vendor/graphiql.min.js",
    "keyplane-graphiql.js",
)

_TEMPLATE = """\
<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>keyplane GraphiQL</title>
    <link rel="icon" href="data:,">
{styles}
  </head>
  <body>
    <div id="graphiql">Loading...</div>
    <script type="application/json" id="graphiql-config">{config}</script>
{scripts}
  </body>
</html>
"""


def asset_url(name: str) -> str:
    digest = hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:16]
    return f"{PREFIX}/{name}?v={digest}"


def _json_for_html(value: object) -> str:
    """JSON that cannot end its <script> block nor open a comment or tag inside it."""
    text = json.dumps(value)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@cache
def page_html() -> str:
    """Built once per process: the assets do not change while it runs."""
    config = {
        "defaultQuery": DEFAULT_QUERY,
        "defaultHeaders": DEFAULT_HEADERS,
        "placeholderAuthorization": PLACEHOLDER_AUTHORIZATION,
    }
    return _TEMPLATE.format(
        styles="\n".join(f'    <link rel="stylesheet" href="{asset_url(n)}">' for n in STYLES),
        scripts="\n".join(f'    <script src="{asset_url(n)}"></script>' for n in SCRIPTS),
        config=_json_for_html(config),
    )


def graphiql_page() -> HTMLResponse:
    return HTMLResponse(page_html(), headers=PAGE_HEADERS)


class Assets(StaticFiles):
    """Starlette's static files (ETag, Last-Modified, 304) with a long cache and `nosniff`."""

    def file_response(
        self,
        full_path: str | os.PathLike[str],
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = ASSET_CACHE_CONTROL
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def assets_mount() -> Mount:
    return Mount(PREFIX, app=Assets(directory=STATIC), name="graphiql")
