"""Checks as plugins: the installed example plugin (examples/keyplane_example_plugin, registered
only through its `keyplane.checks` entry point) changes answers once KEYPLANE_CHECKS names it,
checks given to create_app run on every guarded field or on the request itself, extra scopes
are validated against the scope catalog, and a broken check refuses rather than fails."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from keyplane.app import create_app
from keyplane.auth.oauth import JwksCache
from keyplane.errors import Forbidden
from keyplane.models import Project
from keyplane.permissions.checks import Check, CheckRequest, UnknownCheck
from keyplane.settings import Settings, SettingsError
from tests.check_helpers import VIEWER_KEY, create_key, refused, restricted_key
from tests.factories import FAST_PASSWORDS
from tests.helpers import Api, Clock, Result, Tenant, new_tenant
from tests.template_helpers import bad_input, generate, new_template

CATALOG = "{ scopeCatalog { name description builtIn } }"
BUILT_IN = [
    {
        "name": "GENERATE_DOCUMENTS",
        "description": "Render published templates into documents.",
        "builtIn": True,
    },
    {
        "name": "MANAGE_TEMPLATES",
        "description": "Create, edit, publish and delete templates.",
        "builtIn": True,
    },
    {
        "name": "VIEW_ANALYTICS",
        "description": "Read usage, analytics, keys and the activity log.",
        "builtIn": True,
    },
    {
        "name": "MANAGE_PROJECT",
        "description": "Manage keys, members, environments and their policies.",
        "builtIn": True,
    },
]
BULK = {
    "name": "documents:bulk",
    "description": "Generate documents with an API key (example plugin).",
    "builtIn": False,
}
TEMPLATES = """
query Listing($env: ID!) { templates(environmentId: $env) { edges { node { id } } } }
"""


async def published_template(api: Api, tenant: Tenant) -> str:
    return await new_template(api, tenant.token, tenant.environment_id, publish=True)


def named(settings: Settings, *checks: str) -> Settings:
    return dataclasses.replace(settings, checks=checks)


async def test_the_catalog_lists_the_built_in_scopes(api: Api) -> None:
    result = await api.gql(CATALOG)

    assert result.ok() == {"scopeCatalog": BUILT_IN}


async def test_an_installed_plugin_changes_nothing_until_it_is_named(api: Api) -> None:
    # given: the example plugin is installed, and KEYPLANE_CHECKS is unset
    tenant = await new_tenant(api)
    template_id = await published_template(api, tenant)
    _, secret = await restricted_key(
        api, tenant.token, tenant.environment_id, ["GENERATE_DOCUMENTS"]
    )

    # when
    generated = await generate(api, secret, template_id, {"name": "Ada"})
    bulk_key = await create_key(
        api, tenant.token, tenant.environment_id, extraScopes=["documents:bulk"]
    )

    # then
    assert generated.ok()["generateDocument"]["content"] == "Hello Ada!"
    assert bad_input(bulk_key) == (
        "extraScopes",
        "Unknown scope documents:bulk: Query.scopeCatalog lists them.",
    )


class TestTheInstalledPluginNamed:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return named(settings, "ip_allowlist", "allowed_origins", "bulk_documents")

    async def test_its_scope_joins_the_catalog(self, api: Api) -> None:
        result = await api.gql(CATALOG)

        assert result.ok() == {"scopeCatalog": [*BUILT_IN, BULK]}

    async def test_a_key_needs_its_extra_scope_to_generate_documents(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)
        template_id = await published_template(api, tenant)
        _, plain = await restricted_key(
            api, tenant.token, tenant.environment_id, ["GENERATE_DOCUMENTS"]
        )
        created = await create_key(
            api,
            tenant.token,
            tenant.environment_id,
            ["GENERATE_DOCUMENTS"],
            extraScopes=["documents:bulk"],
        )
        bulk = created.ok()["createApiKey"]

        # when
        without_scope = await generate(api, plain, template_id, {"name": "Ada"})
        with_scope = await generate(api, bulk["secret"], template_id, {"name": "Ada"})
        by_a_person = await generate(api, tenant.token, template_id, {"name": "Ada"})

        # then
        assert isinstance(without_scope, Result)
        assert without_scope.status == 200
        assert without_scope.codes == ["FORBIDDEN"]
        assert without_scope.errors[0]["message"] == (
            "generateDocument needs the documents:bulk scope for API keys."
        )
        assert without_scope.errors[0]["extensions"]["requiredScopes"] == ["documents:bulk"]
        assert bulk["apiKey"]["extraScopes"] == ["documents:bulk"]
        assert with_scope.ok()["generateDocument"]["content"] == "Hello Ada!"
        assert by_a_person.ok()["generateDocument"]["content"] == "Hello Ada!"

    async def test_a_key_cannot_grant_an_extra_scope_it_does_not_carry(self, api: Api) -> None:
        tenant = await new_tenant(api)
        _, manager = await restricted_key(
            api, tenant.token, tenant.environment_id, ["MANAGE_PROJECT"]
        )

        result = await create_key(
            api, manager, tenant.environment_id, ["MANAGE_PROJECT"], extraScopes=["documents:bulk"]
        )

        assert result.codes == ["FORBIDDEN"]
        assert result.errors[0]["message"] == (
            "You cannot grant scopes you do not hold here: documents:bulk."
        )
        assert result.errors[0]["extensions"]["requiredScopes"] == ["documents:bulk"]


class TestNoChecksNamed:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return named(settings)  # KEYPLANE_CHECKS set to nothing: not even the built-in ones

    async def test_a_restricted_key_is_not_checked(self, api: Api) -> None:
        tenant = await new_tenant(api)
        _, secret = await restricted_key(
            api, tenant.token, tenant.environment_id, allowedCidrs=["198.51.100.0/24"]
        )

        result = await api.gql(VIEWER_KEY, token=secret)

        assert result.ok()["viewer"]["kind"] == "API_KEY"


def test_keyplane_checks_is_read_as_names_in_order(tmp_path: Path) -> None:
    development = {"KEYPLANE_ENV": "development", "KEYPLANE_DATA_DIR": str(tmp_path)}

    unset = Settings.from_environ(development)
    listed = Settings.from_environ(
        development | {"KEYPLANE_CHECKS": " bulk_documents, ip_allowlist ,"}
    )
    with pytest.raises(SettingsError) as refused:
        Settings.from_environ(development | {"KEYPLANE_CHECKS": "ip_allowlist,ip_allowlist"})

    assert unset.checks is None
    assert listed.checks == ("bulk_documents", "ip_allowlist")
    assert refused.value.problems == ["KEYPLANE_CHECKS names a check twice"]


async def test_naming_a_check_that_is_not_installed_stops_the_app(settings: Settings) -> None:
    with pytest.raises(UnknownCheck, match="'office_hours'"):
        create_app(named(settings, "ip_allowlist", "office_hours"), migrate=False)


class Recording:
    """A field check that lets everything through and remembers what it was asked."""

    name = "recording"

    def __init__(self) -> None:
        self.seen: list[CheckRequest] = []

    async def __call__(self, request: CheckRequest) -> None:
        self.seen.append(request)


class Broken:
    """A field check with a bug, on the `projects` field only."""

    name = "broken"

    async def __call__(self, request: CheckRequest) -> None:
        if request.field == "projects":
            raise RuntimeError("a bug in a plugin")


class Closed:
    """A check about the request itself: refuses every request that says it is closed."""

    name = "closed"
    about_request: ClassVar[bool] = True

    async def __call__(self, request: CheckRequest) -> None:
        if request.headers.get("x-closed") == "yes":
            raise Forbidden("We are closed.")


RECORDING = Recording()


async def app_with_checks(
    settings: Settings, clock: Clock, *checks: Check
) -> AsyncIterator[Starlette]:
    application = create_app(
        settings,
        passwords=FAST_PASSWORDS,
        jwks=JwksCache(str(settings.oauth.jwks)) if settings.oauth else None,
        clock=clock,
        migrate=False,
        checks=list(checks),
    )
    async with LifespanManager(application):
        yield application


class TestChecksGivenToCreateApp:
    @pytest.fixture
    async def app(self, settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
        RECORDING.seen.clear()
        async for application in app_with_checks(settings, clock, RECORDING, Broken(), Closed()):
            yield application

    async def test_a_field_check_is_asked_about_every_guarded_field(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)
        RECORDING.seen.clear()

        # when
        result = await api.gql(
            TEMPLATES,
            {"env": tenant.environment_id},
            token=tenant.token,
            headers={"Origin": "https://app.example.com"},
        )

        # then
        assert result.ok() == {"templates": {"edges": []}}
        [asked] = RECORDING.seen
        assert (asked.operation, asked.field, asked.path) == (
            "Listing",
            "templates",
            ("templates",),
        )
        assert asked.environment_id == tenant.environment_id
        assert asked.principal.user_id == tenant.user_id
        assert (asked.client_ip, asked.origin) == ("203.0.113.7", "https://app.example.com")
        assert asked.arguments["environment_id"] == tenant.environment_id

    async def test_a_check_that_fails_refuses_as_forbidden_and_is_counted(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)

        # when
        result = await api.gql("{ projects { id } }", token=tenant.token)
        metrics = await api.client.get("/metrics")

        # then
        assert result.status == 200
        assert result.codes == ["FORBIDDEN"]
        assert result.errors[0]["message"] == (
            "A permission check failed; the request was refused."
        )
        assert 'keyplane_check_failures_total{check="broken"} 1' in metrics.text

    async def test_a_check_about_the_request_refuses_it_before_any_field_runs(
        self, api: Api
    ) -> None:
        # given
        tenant = await new_tenant(api)
        RECORDING.seen.clear()

        # when
        result = await api.gql(
            'mutation { createProject(input: {name: "late"}) { id } }',
            token=tenant.token,
            headers={"X-Closed": "yes"},
        )

        # then
        assert refused(result) == "We are closed."
        assert RECORDING.seen == []
        assert await Project.filter(name="late").count() == 0


class Refusing:
    """A field check that refuses `projects`, saying which check it is."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def __call__(self, request: CheckRequest) -> None:
        if request.field == "projects":
            raise Forbidden(f"Refused by {self.name}.")


class BrokenAboutTheRequest:
    """A check about the request itself with a bug."""

    name = "broken_request"
    about_request: ClassVar[bool] = True

    async def __call__(self, request: CheckRequest) -> None:
        if request.headers.get("x-break") == "yes":
            raise RuntimeError("a bug in a plugin")


class TestKeyplaneChecksSelectsAndOrders:
    @pytest.fixture(params=[("first", "second"), ("second", "first"), ("second",), ()])
    def order(self, request: pytest.FixtureRequest) -> tuple[str, ...]:
        names: tuple[str, ...] = request.param
        return names

    @pytest.fixture
    async def app(
        self, settings: Settings, clock: Clock, order: tuple[str, ...]
    ) -> AsyncIterator[Starlette]:
        given = (Refusing("first"), Refusing("second"))
        async for application in app_with_checks(named(settings, *order), clock, *given):
            yield application

    async def test_the_first_named_check_that_refuses_answers(
        self, api: Api, order: tuple[str, ...]
    ) -> None:
        tenant = await new_tenant(api)

        result = await api.gql("{ projects { id } }", token=tenant.token)

        if order:
            assert result.codes == ["FORBIDDEN"]
            assert result.errors[0]["message"] == f"Refused by {order[0]}."
        else:  # KEYPLANE_CHECKS names none: neither runs
            assert result.ok() == {"projects": [{"id": tenant.project_id}]}


class TestABrokenCheckAboutTheRequest:
    @pytest.fixture
    async def app(self, settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
        async for application in app_with_checks(settings, clock, BrokenAboutTheRequest()):
            yield application

    async def test_it_refuses_the_request_with_403_never_500(self, api: Api) -> None:
        tenant = await new_tenant(api)

        broken = await api.gql(
            "{ projects { id } }", token=tenant.token, headers={"X-Break": "yes"}
        )
        metrics = await api.client.get("/metrics")

        assert refused(broken) == "A permission check failed; the request was refused."
        assert broken.errors[0]["extensions"]["requiredScopes"] == []
        assert 'keyplane_check_failures_total{check="broken_request"} 1' in metrics.text


def test_keyplane_serve_refuses_to_start_with_a_check_that_is_not_installed(
    tmp_path: Path,
) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "keyplane", "serve", "--port", "1"],
        env={
            **os.environ,
            "KEYPLANE_DATA_DIR": str(tmp_path),
            "KEYPLANE_JWT_SECRET": secrets.token_urlsafe(48),
            "KEYPLANE_CHECKS": "ip_allowlist,office_hours",
        },
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert completed.returncode == 2
    assert "KEYPLANE_CHECKS names 'office_hours', which is not installed" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not (tmp_path / "keyplane.sqlite3").exists()  # nothing was migrated


class RefusingApiKey:
    """A field check that refuses the `apiKey` lookup."""

    name = "no_api_key"

    async def __call__(self, request: CheckRequest) -> None:
        if request.field == "apiKey":
            raise Forbidden("No apiKey today.")


class TestAFieldCheckAndNode:
    @pytest.fixture
    async def app(self, settings: Settings, clock: Clock) -> AsyncIterator[Starlette]:
        async for application in app_with_checks(settings, clock, RefusingApiKey()):
            yield application

    async def test_node_and_nodes_ask_the_checks_about_the_typed_lookup(self, api: Api) -> None:
        # given
        tenant = await new_tenant(api)
        key_id, _ = await api.create_key(tenant.token, tenant.environment_id, ["VIEW_ANALYTICS"])

        # when
        typed = await api.gql(
            "query($id: ID!) { apiKey(id: $id) { id } }", {"id": key_id}, token=tenant.token
        )
        node = await api.gql(
            "query($id: ID!) { node(id: $id) { id } }", {"id": key_id}, token=tenant.token
        )
        nodes = await api.gql(
            "query($id: ID!, $env: ID!) { nodes(ids: [$id, $env]) { id } }",
            {"id": key_id, "env": tenant.environment_id},
            token=tenant.token,
        )

        # then
        for refused_lookup in (typed, node):
            assert refused_lookup.codes == ["FORBIDDEN"]
            assert refused_lookup.errors[0]["message"] == "No apiKey today."
        assert nodes.data == {"nodes": [None, {"id": tenant.environment_id}]}
        assert nodes.codes == ["FORBIDDEN"]
