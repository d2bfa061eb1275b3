"""Hostile templates: each is refused or bounded with a clear error, and the server stays well.

Templates are written by API callers and run on our machines. Python internals are out of the
sandbox's reach; loops, recursion, huge values and huge outputs meet the time, memory and size
limits in a child process, which is replaced when it has to be killed. Every failure is a
BAD_USER_INPUT that says what happened (never INTERNAL), is logged as DOCUMENT_FAILED, and the
next request is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from keyplane.app import create_app
from keyplane.models.activity import ActivityKind
from keyplane.render.limits import MIB, RenderLimits
from keyplane.render.pool import RenderPool
from keyplane.settings import Settings, SettingsError
from tests.conftest import PG_URL
from tests.conftest import _truncate_all as truncate_all
from tests.factories import FAST_PASSWORDS
from tests.helpers import Api, Clock, OAuthIssuer, Tenant, new_tenant
from tests.template_helpers import (
    bad_input,
    create_template,
    events,
    generate,
    new_template,
)

# The default limits are in force here: 2 s, 1 MiB of output, 256 MiB of address space.
TIMEOUT = RenderLimits().timeout_seconds
QUICKLY = 1.0  # seconds: what "answered at once" means on a loaded CI machine
REFUSED = "The sandbox refused an operation on line 1: "
UNSAFE = "access to attribute '{}' of '{}' object is unsafe."
TOO_LARGE = "The rendered document would exceed 1,048,576 bytes; rendering was stopped."
MEMORY = "Rendering needed more memory than allowed on line 1."
RECURSION = (
    "Rendering recursed too deeply on line 1 (a macro or recursive loop calling itself "
    "without end?)."
)

PYTHON_INTERNALS = {
    "{{ ''.__class__.__mro__ }}": UNSAFE.format("__class__", "str"),
    "{{ ''.__class__.__mro__[1].__subclasses__() }}": UNSAFE.format("__class__", "str"),
    "{{ (1).__class__.__base__.__subclasses__() }}": UNSAFE.format("__class__", "int"),
    "{{ cycler.__init__.__globals__ }}": UNSAFE.format("__init__", "type"),
    "{{ joiner.__init__.__globals__.os }}": UNSAFE.format("__init__", "type"),
    "{{ namespace.__init__.__globals__ }}": UNSAFE.format("__init__", "type"),
    "{{ range.__globals__ }}": UNSAFE.format("__globals__", "function"),
    "{{ dict.__subclasses__() }}": UNSAFE.format("__subclasses__", "type"),
    "{{ self.__dict__ }}": UNSAFE.format("__dict__", "TemplateReference"),
    "{{ self._TemplateReference__context }}": UNSAFE.format(
        "_TemplateReference__context", "TemplateReference"
    ),
    "{{ '{0.__class__}'.format(1) }}": UNSAFE.format("__class__", "int"),
    "{{ name.__class__ }}": UNSAFE.format("__class__", "str"),
    # The data cannot be changed from inside either.
    "{{ items.pop() }}": UNSAFE.format("pop", "list"),
    "{{ items.append(items) }}": UNSAFE.format("append", "list"),
}

# Each (template, message): bounded in time, memory or size, with the limit that stopped it.
RUNAWAYS = {
    "range over a billion": (
        "{% for i in range(1000000000) %}{% endfor %}",
        REFUSED + "Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).",
    ),
    "nested loops, silent": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "Rendering took longer than 2 s and was stopped.",
    ),
    "nested loops, printing": (
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        TOO_LARGE,
    ),
    "100 MB in one expression": (
        "{{ 'x' * 100000000 }}",
        REFUSED + "This would build a value of 100,000,000 characters or items; a document "
        "may hold at most 1,048,576 bytes.",
    ),
    "100 MB from a loop": ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", TOO_LARGE),
    "a list a hundred million long": (
        "{{ items * 100000000 }}",
        REFUSED + "This would build a value of 200,000,000 characters or items; a document "
        "may hold at most 1,048,576 bytes.",
    ),
    "recursive macro": ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", RECURSION),
    "mutually recursive macros": (
        "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
        RECURSION,
    ),
    "recursive loop": ("{% for i in [1] recursive %}{{ loop([1]) }}{% endfor %}", RECURSION),
    "a gigabyte from a filter": ("{{ ''|center(1000000000) }}", MEMORY),
    "a gigabyte from a format": ("{{ '%0999999999d'|format(1) }}", MEMORY),
    "a string doubled 64 times": (
        "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
        "{% endfor %}{{ ns.s|length }}",
        MEMORY,
    ),
    "a number with a hundred million bits": (
        "{{ 2 ** 100000000 }}",
        REFUSED + "This power is too large a number to compute.",
    ),
}

DATA = {"name": "Ada", "items": [1, 2]}


async def benign_template(api: Api, owner: Tenant) -> str:
    return await new_template(
        api, owner.token, owner.environment_id, name="benign", content="Hi {{ name }}", publish=True
    )


async def assert_answers_quickly(api: Api, owner: Tenant, benign_id: str) -> None:
    """The next requests, a plain query and a rendering, are answered at once."""
    started = time.monotonic()
    (await api.gql("{ viewer { kind } }", token=owner.token)).ok()
    result = await generate(api, owner.token, benign_id, {"name": "Bob"})
    assert result.ok()["generateDocument"]["content"] == "Hi Bob"
    assert time.monotonic() - started < QUICKLY


@contextlib.asynccontextmanager
async def running(
    settings: Settings, clock: Clock, oauth_issuer: OAuthIssuer
) -> AsyncIterator[tuple[Starlette, Api]]:
    """An app of our own (the `app` fixture's settings are fixed), under its lifespan."""
    application = create_app(settings, passwords=FAST_PASSWORDS, clock=clock, migrate=False)
    async with LifespanManager(application):
        if PG_URL:
            await truncate_all()
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://keyplane.test") as c:
            yield application, Api(c, oauth_issuer)


def pool_of(app: Starlette) -> RenderPool:
    renderer: RenderPool = app.state.services.renderer
    return renderer


@pytest.mark.parametrize(("content", "message"), list(PYTHON_INTERNALS.items()))
async def test_python_internals_are_out_of_reach(api: Api, content: str, message: str) -> None:
    # given
    owner = await new_tenant(api)
    benign_id = await benign_template(api, owner)
    template_id = await new_template(
        api, owner.token, owner.environment_id, content=content, publish=True
    )

    # when
    result = await generate(api, owner.token, template_id, DATA)

    # then
    assert bad_input(result) == ("templateId", REFUSED + message)
    [event] = await events(ActivityKind.DOCUMENT_FAILED)
    assert event.target == f"template:{template_id} v1 invoice: SECURITY"
    await assert_answers_quickly(api, owner, benign_id)


@pytest.mark.parametrize("name", ["lipsum", "config", "request", "os", "__builtins__"])
async def test_nothing_but_the_data_and_jinjas_helpers_is_in_scope(api: Api, name: str) -> None:
    # given
    owner = await new_tenant(api)
    template_id = await new_template(
        api, owner.token, owner.environment_id, content=f"{{{{ {name}.x }}}}", publish=True
    )

    # when
    result = await generate(api, owner.token, template_id, DATA)

    # then
    assert bad_input(result) == (
        "data",
        f"Undefined value on line 1: '{name}' is undefined. Check the names in data.",
    )


@pytest.mark.parametrize(
    ("content", "tag"),
    [
        ("{% include '/etc/passwd' %}", "include"),
        ("{% extends 'base.html' %}", "extends"),
        ("{% import 'macros' as m %}", "import"),
        ("{% from 'macros' import m %}", "from ... import"),
    ],
)
async def test_loading_another_template_or_a_file_is_refused_when_the_template_is_written(
    api: Api, content: str, tag: str
) -> None:
    # given
    owner = await new_tenant(api)

    # when
    result = await create_template(api, owner.token, owner.environment_id, content=content)

    # then
    assert bad_input(result) == (
        "content",
        f"Template syntax error on line 1: '{tag}' is not available: a template cannot load "
        "another.",
    )


@pytest.mark.slow
@pytest.mark.parametrize(("content", "message"), list(RUNAWAYS.values()), ids=list(RUNAWAYS))
async def test_runaway_templates_are_bounded_with_a_clear_error(
    api: Api, content: str, message: str
) -> None:
    # given
    owner = await new_tenant(api)
    benign_id = await benign_template(api, owner)
    template_id = await new_template(
        api, owner.token, owner.environment_id, content=content, publish=True
    )

    # when
    started = time.monotonic()
    result = await generate(api, owner.token, template_id, DATA)
    elapsed = time.monotonic() - started

    # then
    assert bad_input(result) == ("templateId", message)
    assert elapsed < TIMEOUT + 2  # the limit, plus starting a replacement child
    [event] = await events(ActivityKind.DOCUMENT_FAILED)
    assert event.target.startswith(f"template:{template_id} v1 invoice: ")
    await assert_answers_quickly(api, owner, benign_id)


@pytest.mark.slow
@pytest.mark.parametrize("render_workers", [2])
async def test_an_endless_template_does_not_hold_up_other_requests(
    api: Api, app: Starlette
) -> None:
    # given
    owner = await new_tenant(api)
    benign_id = await benign_template(api, owner)
    endless_id = await new_template(
        api,
        owner.token,
        owner.environment_id,
        content="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        publish=True,
    )
    await assert_answers_quickly(api, owner, benign_id)  # both children are warm

    # when
    endless = asyncio.create_task(generate(api, owner.token, endless_id, {}))
    await asyncio.sleep(0.2)
    for _ in range(3):
        await assert_answers_quickly(api, owner, benign_id)
    still_running = not endless.done()
    result = await endless

    # then
    assert still_running
    assert bad_input(result) == ("templateId", "Rendering took longer than 2 s and was stopped.")
    assert len(pool_of(app).child_pids) == 2


@dataclasses.dataclass(frozen=True)
class Small:
    app: Starlette
    api: Api


@pytest.fixture
async def small(
    settings: Settings, clock: Clock, oauth_issuer: OAuthIssuer
) -> AsyncIterator[Small]:
    """An app with tiny limits: 1 KiB of template, data and output, 0.5 s, one child."""
    limits = RenderLimits(
        template_max_bytes=1024,
        data_max_bytes=1024,
        output_max_bytes=1024,
        timeout_seconds=0.5,
        workers=1,
    )
    small_settings = dataclasses.replace(settings, render=limits)
    async with running(small_settings, clock, oauth_issuer) as (application, api):
        yield Small(application, api)


@pytest.mark.slow
async def test_a_child_that_ran_out_of_time_is_replaced(small: Small) -> None:
    # given
    api, app = small.api, small.app
    owner = await new_tenant(api)
    endless_id = await new_template(
        api,
        owner.token,
        owner.environment_id,
        content="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        publish=True,
    )
    before = set(pool_of(app).child_pids)

    # when
    result = await generate(api, owner.token, endless_id, {})

    # then
    assert result.codes == ["BAD_USER_INPUT"]
    after = set(pool_of(app).child_pids)
    assert len(after) == len(before) == 1
    assert after != before
    for pid in before:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_child_killed_from_outside_is_replaced_without_the_caller_noticing(
    api: Api, app: Starlette
) -> None:
    # given
    owner = await new_tenant(api)
    benign_id = await benign_template(api, owner)
    for pid in pool_of(app).child_pids:
        os.kill(pid, signal.SIGKILL)
    await asyncio.sleep(0.1)

    # when
    result = await generate(api, owner.token, benign_id, {"name": "Eve"})

    # then
    assert result.ok()["generateDocument"]["content"] == "Hi Eve"


async def test_each_child_runs_with_its_address_space_capped(api: Api, app: Starlette) -> None:
    # given
    owner = await new_tenant(api)
    await benign_template(api, owner)

    # when
    [pid] = pool_of(app).child_pids
    limits = await asyncio.to_thread(Path(f"/proc/{pid}/limits").read_text)

    # then
    [line] = [line for line in limits.splitlines() if line.startswith("Max address space")]
    assert line.split()[3:5] == [str(256 * MIB), str(256 * MIB)]


async def test_the_children_start_with_the_first_template_and_stop_with_the_app(
    settings: Settings, clock: Clock, oauth_issuer: OAuthIssuer
) -> None:
    # given
    async with running(settings, clock, oauth_issuer) as (application, api):
        owner = await new_tenant(api)
        idle = list(pool_of(application).child_pids)

        # when
        await benign_template(api, owner)
        started = list(pool_of(application).child_pids)

    # then
    assert idle == []
    assert len(started) == 1
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- the limits follow the settings ------------------------------------------------------------


@pytest.mark.slow
async def test_the_limits_come_from_the_settings(small: Small) -> None:
    # given
    api = small.api
    owner = await new_tenant(api)
    template_id = await new_template(
        api, owner.token, owner.environment_id, content="{{ text }}{{ text }}", publish=True
    )
    slow_id = await new_template(
        api,
        owner.token,
        owner.environment_id,
        name="slow",
        content="{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        publish=True,
    )

    # when
    long_template = await create_template(
        api, owner.token, owner.environment_id, name="long", content="x" * 1025
    )
    long_data = await generate(api, owner.token, template_id, {"text": "x" * 1020})
    long_output = await generate(api, owner.token, template_id, {"text": "x" * 600})
    slow = await generate(api, owner.token, slow_id, {})

    # then
    assert bad_input(long_template) == (
        "content",
        "content is 1,025 bytes; templates are limited to 1,024 bytes.",
    )
    assert bad_input(long_data) == (
        "data",
        "data is 1,031 bytes of JSON; the limit is 1,024 bytes.",
    )
    assert bad_input(long_output) == (
        "templateId",
        "The rendered document would exceed 1,024 bytes; rendering was stopped.",
    )
    assert bad_input(slow) == ("templateId", "Rendering took longer than 0.5 s and was stopped.")


def test_the_render_limits_are_read_from_the_environment(tmp_path: Path) -> None:
    # given
    environ = {
        "KEYPLANE_ENV": "development",
        "KEYPLANE_JWT_SECRET": "s" * 40,
        "KEYPLANE_DATA_DIR": str(tmp_path),
        "KEYPLANE_TEMPLATE_MAX_BYTES": "2048",
        "KEYPLANE_DOCUMENT_DATA_MAX_BYTES": "4096",
        "KEYPLANE_RENDER_OUTPUT_MAX_BYTES": "8192",
        "KEYPLANE_RENDER_TIMEOUT_SECONDS": "0.75",
        "KEYPLANE_RENDER_MEMORY_MB": "128",
        "KEYPLANE_RENDER_WORKERS": "3",
    }

    # when
    settings = Settings.from_environ(environ)

    # then
    assert settings.render == RenderLimits(
        template_max_bytes=2048,
        data_max_bytes=4096,
        output_max_bytes=8192,
        timeout_seconds=0.75,
        memory_max_bytes=128 * MIB,
        workers=3,
    )
    development = {"KEYPLANE_ENV": "development", "KEYPLANE_JWT_SECRET": "s" * 40}
    assert Settings.from_environ(development, create_secret=False).render == RenderLimits()


def test_invalid_render_limits_are_all_reported(tmp_path: Path) -> None:
    # given
    environ = {
        "KEYPLANE_ENV": "development",
        "KEYPLANE_JWT_SECRET": "s" * 40,
        "KEYPLANE_DATA_DIR": str(tmp_path),
        "KEYPLANE_TEMPLATE_MAX_BYTES": "lots",
        "KEYPLANE_RENDER_TIMEOUT_SECONDS": "0",
        "KEYPLANE_RENDER_WORKERS": "0",
    }

    # when
    with pytest.raises(SettingsError) as raised:
        Settings.from_environ(environ)

    # then
    assert raised.value.problems == [
        "KEYPLANE_TEMPLATE_MAX_BYTES must be a whole number from 1024 to 16777216 (got 'lots')",
        "KEYPLANE_RENDER_WORKERS must be a whole number from 1 to 32 (got '0')",
        "KEYPLANE_RENDER_TIMEOUT_SECONDS must be a number from 0.1 to 60 (got '0')",
    ]
