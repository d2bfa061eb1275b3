"""GraphiQL in a real browser: Debian's `chromium` package driven by Playwright for Python, never
a browser build Playwright downloads. A `keyplane serve --dev` process serves the page; every
request for another host than 127.0.0.1 is aborted and recorded, and none may be attempted.

Skipped when Playwright (`pip install -e '.[browser]'`) or `chromium` is absent, so that
`make test` passes on a laptop without them; `make test-browser` (and so .ci/run) sets
KEYPLANE_REQUIRE_BROWSER=1, which turns that skip into a failure.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from keyplane.graphiql.page import DEFAULT_QUERY, PLACEHOLDER_AUTHORIZATION
from tests.helpers import Api, OAuthIssuer, new_tenant
from tests.serve_process import keyplane_serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
REQUIRED = os.environ.get("KEYPLANE_REQUIRE_BROWSER") == "1"
# Headless, and quiet: nothing of Chromium's own (updates, sync, field trials) goes out.
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
GENEROUS = "api_key=10000/minute;oauth=10000/minute;jwt=10000/minute;anonymous=10000/minute"

QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
HEADER_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"
RESULT = ".graphiql-response .CodeMirror"
RUN = ".graphiql-execute-button"
# Every CSP violation the page meets, recorded before any of its own scripts run.
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__violations.push(event.violatedDirective + " " + event.blockedURI);
});
"""


def _missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[browser]')"
    if CHROMIUM is None:
        return "no `chromium` on PATH (Debian: apt-get install chromium)"
    return None


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = _missing()
    if missing is not None:
        if REQUIRED:
            pytest.fail(f"KEYPLANE_REQUIRE_BROWSER=1 but {missing}")
        pytest.skip(missing)
    with keyplane_serve(
        tmp_path_factory.mktemp("graphiql"),
        KEYPLANE_ENV="development",
        KEYPLANE_RATE_LIMITS=GENEROUS,
    ) as base:
        yield base


@dataclass
class Browser:
    """One page in a fresh Chromium profile, and what it tried to reach elsewhere."""

    page: Any  # playwright.async_api.Page (an optional dependency: not imported for typing)
    elsewhere: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    async def editor(self, selector: str) -> str:
        value: str = await self.page.eval_on_selector(selector, "e => e.CodeMirror.getValue()")
        return value

    async def result(self) -> dict[str, Any]:
        """The result pane's JSON, once GraphiQL has written one there."""
        await self.page.wait_for_function(
            "selector => document.querySelector(selector).CodeMirror.getValue() !== ''",
            arg=RESULT,
        )
        parsed: dict[str, Any] = json.loads(await self.editor(RESULT))
        return parsed

    async def replace_text(self, selector: str, text: str) -> None:
        """Selects all of an editor's text and pastes `text` over it, as a person would."""
        await self.page.click(selector)
        await self.page.keyboard.press("Control+A")
        await self.page.keyboard.insert_text(text)

    async def stored(self) -> str:
        text: str = await self.page.evaluate(
            "JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])"
        )
        return text

    async def assert_offline_and_clean(self) -> None:
        """Nothing was asked of another host, no CSP rule was broken, no script failed."""
        violations = await self.page.evaluate("window.__violations")
        assert (self.elsewhere, violations, self.errors) == ([], [], [])


@pytest.fixture
async def browser(server: str) -> AsyncIterator[Browser]:
    from playwright.async_api import Route, async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await chromium.new_context()
            await context.add_init_script(RECORD_VIOLATIONS)
            opened = Browser(await context.new_page())

            async def only_this_server(route: Route) -> None:
                if urlsplit(route.request.url).hostname == "127.0.0.1":
                    await route.continue_()
                else:
                    opened.elsewhere.append(route.request.url)
                    await route.abort()

            await context.route("**/*", only_this_server)
            opened.page.on("pageerror", lambda error: opened.errors.append(str(error)))
            opened.page.on(
                "console",
                lambda message: (
                    opened.errors.append(message.text) if message.type == "error" else None
                ),
            )
            await opened.page.goto(f"{server}/graphql")
            await opened.page.wait_for_selector(QUERY_EDITOR)
            yield opened
        finally:
            await chromium.close()


async def test_the_page_renders_its_editors_with_the_network_limited_to_this_server(
    browser: Browser,
) -> None:
    # then: the example query and the header template, from nothing but 127.0.0.1
    assert await browser.editor(QUERY_EDITOR) == DEFAULT_QUERY
    headers = json.loads(await browser.editor(HEADER_EDITOR))
    assert headers == {"Authorization": PLACEHOLDER_AUTHORIZATION}
    await browser.assert_offline_and_clean()


async def test_the_viewer_query_runs_with_a_pasted_key_which_is_never_stored(
    browser: Browser, server: str, tmp_path: Path
) -> None:
    # given: a real key, made over HTTP
    async with httpx.AsyncClient(base_url=server, timeout=30) as client:
        api = Api(client, OAuthIssuer.create(tmp_path / "jwks.json"))
        tenant = await new_tenant(api, environments=["staging"])
        _, secret = await api.create_key(
            tenant.token, tenant.environment_id, ["VIEW_ANALYTICS"], name="from-graphiql"
        )

    # when: pasted into the header editor, and the example query run
    await browser.replace_text(HEADER_EDITOR, json.dumps({"Authorization": f"Bearer {secret}"}))
    await browser.page.click(RUN)
    result = await browser.result()

    # then
    viewer = result["data"]["viewer"]
    assert (viewer["kind"], viewer["apiKey"]["name"]) == ("API_KEY", "from-graphiql")
    assert viewer["environment"] == {"name": "staging"}
    stored = await browser.stored()
    assert "graphiql:" in stored  # GraphiQL did keep its tabs and history ...
    assert secret not in stored  # ... but no header
    assert "fm_" not in stored
    await browser.assert_offline_and_clean()

    # when: the page is opened again
    await browser.page.reload()
    await browser.page.wait_for_selector(QUERY_EDITOR)

    # then: the template is back, not the key
    headers = json.loads(await browser.editor(HEADER_EDITOR))
    assert headers == {"Authorization": PLACEHOLDER_AUTHORIZATION}
    assert secret not in await browser.stored()
    await browser.assert_offline_and_clean()


async def test_the_template_header_is_not_sent_so_the_example_runs_anonymously(
    browser: Browser,
) -> None:
    # when
    await browser.page.click(RUN)
    result = await browser.result()

    # then
    assert result["data"]["viewer"]["kind"] == "ANONYMOUS"
    await browser.assert_offline_and_clean()


async def test_a_misspelt_field_gets_a_suggestion_in_development(browser: Browser) -> None:
    # given
    await browser.replace_text(QUERY_EDITOR, "query Typo { viewer { knid } }")

    # when
    await browser.page.click(RUN)
    result = await browser.result()

    # then
    [error] = result["errors"]
    assert error["message"] == "Cannot query field 'knid' on type 'Viewer'. Did you mean 'kind'?"
    await browser.assert_offline_and_clean()
