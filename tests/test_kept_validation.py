"""A document's validation errors are kept with it and shared by every request that sends it:
answering one request (coding the errors, masking them) makes new errors and leaves the kept
ones as graphql-core made them."""

from __future__ import annotations

import uuid

from graphql import GraphQLError
from starlette.applications import Starlette

from keyplane.schema.engine import KeyplaneSchema, QueryPolicy
from keyplane.schema.root import build_schema
from tests.helpers import Api


async def test_answering_an_invalid_document_twice_leaves_its_kept_errors_unchanged(
    api: Api, app: Starlette
) -> None:
    # given: a document no request has sent before, with a misspelt field
    query = f"query Typo{uuid.uuid4().hex} {{ viewr {{ kind }} }}"
    schema: KeyplaneSchema = app.state.schema
    first = await api.gql(query)
    kept = _kept(schema, query)
    before = [error.formatted for error in kept]

    # when
    second = await api.gql(query)

    # then: each answer is coded, the kept errors are the same objects, as graphql-core made them
    expected = {
        "message": "Cannot query field 'viewr' on type 'Query'. Did you mean 'viewer'?",
        "locations": [{"line": 1, "column": 46}],
        "extensions": {"code": "BAD_USER_INPUT", "field": "query"},
    }
    assert first.errors == second.errors == [expected]
    assert _kept(schema, query) is kept
    assert (
        [error.formatted for error in kept]
        == before
        == [{"message": expected["message"], "locations": expected["locations"]}]
    )


def _kept(schema: KeyplaneSchema, query: str) -> tuple[GraphQLError, ...]:
    parsed = schema.queries.parsed(query)
    return parsed.validation_errors(schema.policy.limits, hide_suggestions=schema.policy.production)


async def test_in_production_kept_errors_lack_suggestions_and_answering_leaves_them_so() -> None:
    # given: the production profile's schema, and a document it has not seen
    schema = build_schema(policy=QueryPolicy(production=True))
    query = f"query Typo{uuid.uuid4().hex} {{ viewr {{ kind }} }}"
    first = await schema.execute(query)
    kept = _kept(schema, query)

    # when
    second = await schema.execute(query)

    # then
    message = "Cannot query field 'viewr' on type 'Query'."
    assert [error.formatted for error in first.errors or []] == [
        {
            "message": message,
            "locations": [{"line": 1, "column": 46}],
            "extensions": {"code": "BAD_USER_INPUT", "field": "query"},
        }
    ]
    assert second.errors == first.errors
    assert _kept(schema, query) is kept
    assert [error.formatted for error in kept] == [
        {"message": message, "locations": [{"line": 1, "column": 46}]}
    ]
