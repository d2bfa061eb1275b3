"""GraphQL through the app's schema, without HTTP: for tests of behaviour, not of transport.

`execute()` has the app's own `GraphQLView.get_context` (src/keyplane/http.py) make the Context,
with the principal the app's authenticator makes of a bearer credential, and runs the document
through `schema.execute`. What the view adds around that (rate limits and their headers, usage
metering, the body checks, HTTP status codes) is left to the HTTP tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from keyplane.http import GraphQLView
from keyplane.services import Services
from tests.helpers import Client, OAuthIssuer

CLIENT = ("203.0.113.7", 50000)  # the peer address the `client` fixture's transport uses


@dataclass(frozen=True)
class Outcome:
    """One GraphQL answer, as the client would read its body."""

    data: Any
    errors: list[dict[str, Any]]

    @property
    def codes(self) -> list[str | None]:
        return [e.get("extensions", {}).get("code") for e in self.errors]

    def ok(self) -> Any:
        assert not self.errors, self.errors
        return self.data


async def execute(
    app: Starlette,
    document: str,
    variables: dict[str, Any] | None = None,
    *,
    credential: str | None = None,
    operation_name: str | None = None,
) -> Outcome:
    """Runs `document` as the holder of `credential` (an API key's secret or a session token;
    None for an anonymous caller). Inside the app's lifespan (the `app` fixture)."""
    services: Services = app.state.services
    authorization = None if credential is None else f"Bearer {credential}"
    # Where AuthenticationMiddleware leaves the principal for the view.
    principal = await services.authenticator.authenticate(authorization)
    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/graphql",
        "headers": [],
        "query_string": b"",
        "client": CLIENT,
        "state": {"principal": principal},
    }
    context = await _view(app).get_context(Request(scope), Response())
    result = await app.state.schema.execute(
        document, variable_values=variables, context_value=context, operation_name=operation_name
    )
    errors = [error.formatted for error in result.errors or []]
    return Outcome(data=result.data, errors=errors)


@dataclass(frozen=True)
class SchemaApi(Client):
    """`execute()` as a `Client`, with the call shape of `tests.helpers.Api.gql`, so that one
    helper (`new_tenant`, `create_key`, `template_helpers.create_template`) serves a behaviour
    test and an HTTP test alike."""

    app: Starlette
    oauth: OAuthIssuer

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, *, token: str | None = None
    ) -> Outcome:
        return await execute(self.app, query, variables, credential=token)


def _view(app: Starlette) -> GraphQLView:
    """The app's GraphQL view, whose get_context makes the Context."""
    for route in app.routes:
        if isinstance(route, Route) and isinstance(route.endpoint, GraphQLView):
            return route.endpoint
    raise LookupError("the app has no GraphQL view")
