"""GraphiQL offline: in development the page and every script and style it loads come from
keyplane itself, under a strict Content-Security-Policy; the vendored builds are the ones
recorded with their licences, and ship in the package. The browser half is
test_graphiql_browser.py."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from keyplane.graphiql.page import DEFAULT_QUERY, STATIC
from keyplane.settings import RunMode, Settings
from tests.helpers import Api, new_tenant

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "keyplane"
VENDOR = STATIC / "vendor"
AS_HTML = {"Accept": "text/html"}

STRICT_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; font-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


class Page(HTMLParser):
    """The page's <script> and <link> elements, and the text of its JSON data block."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[dict[str, str | None]] = []
        self.inline: list[str] = []
        self._in_script = False
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "script":
            self.scripts.append(dict(attrs))
            self._in_script = True
        elif tag == "link":
            self.links.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)

    @property
    def config(self) -> dict[str, str]:
        [block] = self.inline
        config: dict[str, str] = json.loads(block)
        return config


async def graphiql(api: Api) -> Page:
    response = await api.client.get("/graphql", headers=AS_HTML)
    assert response.status_code == 200
    return Page(response.text)


async def test_the_page_is_served_in_development_under_a_strict_content_security_policy(
    api: Api,
) -> None:
    # when
    response = await api.client.get("/graphql", headers=AS_HTML)

    # then
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == STRICT_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "https://" not in response.text


async def test_every_script_and_style_comes_from_this_server_and_no_script_is_inline(
    api: Api,
) -> None:
    # when
    page = await graphiql(api)

    # then: scripts are files under /graphiql/; the one element without src is data, not code
    sources = [script["src"] for script in page.scripts if script.get("src")]
    data_blocks = [script for script in page.scripts if not script.get("src")]
    assert [src.split("?")[0] for src in sources if src] == [
        "/graphiql/vendor/react.production.min.js",
        "/graphiql/vendor/react-dom.production.min.js",
        "/graphiql/vendor/graphiql.min.js",
        "/graphiql/keyplane-graphiql.js",
    ]
    assert data_blocks == [{"type": "application/json", "id": "graphiql-config"}]
    styles = [link["href"] for link in page.links if link.get("rel") == "stylesheet"]
    assert [href.split("?")[0] for href in styles if href] == [
        "/graphiql/vendor/graphiql.min.css",
        "/graphiql/keyplane-graphiql.css",
    ]
    assert [link["href"] for link in page.links if link.get("rel") == "icon"] == ["data:,"]


async def test_each_asset_is_served_as_its_file_with_a_long_cache(api: Api) -> None:
    # given
    page = await graphiql(api)
    urls = [s["src"] for s in page.scripts if s.get("src")] + [
        link["href"] for link in page.links if link.get("rel") == "stylesheet"
    ]

    for url in urls:
        assert url is not None
        # when
        response = await api.client.get(url)

        # then: the file itself; its URL carries its digest, so it may be kept for a year
        path, _, version = url.partition("?v=")
        body = (STATIC / path.removeprefix("/graphiql/")).read_bytes()
        assert response.status_code == 200, url
        assert response.content == body
        assert hashlib.sha256(body).hexdigest().startswith(version)
        assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert response.headers["x-content-type-options"] == "nosniff"
        kind = "text/css" if path.endswith(".css") else "text/javascript"
        assert response.headers["content-type"].startswith(kind)


async def test_the_page_offers_the_viewer_query_and_an_authorization_header_template(
    api: Api,
) -> None:
    # when
    config = (await graphiql(api)).config

    # then
    assert config["defaultQuery"] == DEFAULT_QUERY
    assert "query Viewer {\n  viewer {\n    kind\n" in DEFAULT_QUERY
    template = {"Authorization": "Bearer fm_<paste your key>"}
    assert json.loads(config["defaultHeaders"]) == template
    assert config["placeholderAuthorization"] == template["Authorization"]


async def test_the_example_query_answers_with_the_pasted_key_as_viewer(api: Api) -> None:
    # given
    tenant = await new_tenant(api, environments=["staging"])
    _, secret = await api.create_key(
        tenant.token, tenant.environment_id, ["VIEW_ANALYTICS"], name="graphiql"
    )

    # when
    viewer = (await api.gql(DEFAULT_QUERY, token=secret)).ok()["viewer"]

    # then
    assert (viewer["kind"], viewer["scopes"]) == ("API_KEY", ["VIEW_ANALYTICS"])
    assert viewer["apiKey"]["name"] == "graphiql"
    assert secret.startswith(viewer["apiKey"]["prefix"])
    assert viewer["environment"] == {"name": "staging"}
    assert viewer["rateLimit"]["tier"] == "api_key"


async def test_the_example_query_runs_anonymously_before_a_key_is_pasted(api: Api) -> None:
    # when
    viewer = (await api.gql(DEFAULT_QUERY)).ok()["viewer"]

    # then
    assert (viewer["kind"], viewer["apiKey"], viewer["environment"]) == ("ANONYMOUS", None, None)


class TestInProduction:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return dataclasses.replace(settings, mode=RunMode.PRODUCTION)

    async def test_neither_the_page_nor_its_assets_are_served(self, api: Api) -> None:
        # when
        page = await api.client.get("/graphql", headers=AS_HTML)
        assets = [
            await api.client.get(f"/graphiql/{name}")
            for name in ("keyplane-graphiql.js", "vendor/graphiql.min.js")
        ]

        # then
        assert page.status_code == 405
        assert [response.status_code for response in assets] == [404, 404]


def test_the_vendored_files_are_the_recorded_versions_with_their_licences() -> None:
    # given
    recorded = json.loads((VENDOR / "versions.json").read_text())

    # then: GraphiQL 3 is the last with a UMD build; React 18 the last with UMD builds
    assert {name: package["version"].split(".")[0] for name, package in recorded.items()} == {
        "graphiql": "3",
        "react": "18",
        "react-dom": "18",
    }
    listed = {"versions.json"}
    for package in recorded.values():
        assert package["integrity"].startswith("sha512-")
        assert "MIT License" in (VENDOR / package["license"]).read_text()
        for name, file in package["files"].items():
            body = (VENDOR / name).read_bytes()
            assert (len(body), hashlib.sha256(body).hexdigest()) == (file["bytes"], file["sha256"])
            listed.add(name)
    assert {path.name for path in VENDOR.iterdir()} == listed


def test_every_static_file_is_package_data() -> None:
    # given
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["keyplane"]

    # when
    shipped = {path for pattern in patterns for path in PACKAGE.glob(pattern) if path.is_file()}

    # then
    files = {path for path in STATIC.rglob("*") if path.is_file()}
    assert len(files) >= 10
    assert files <= shipped
