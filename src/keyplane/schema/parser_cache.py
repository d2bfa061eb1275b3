"""A parser cache whose syntax errors are reported like every other GraphQL error."""

from __future__ import annotations

from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import ParserCache as StrawberryParserCache


class ParserCache(StrawberryParserCache):
    """Strawberry's ParserCache raises syntax errors from `on_parse`, outside the operation
    hooks, so they skipped MaskInternalErrors and reached clients without a code. On failure
    we leave the document unset: Strawberry parses it again inside its own error handling."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        try:
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        except GraphQLError:
            pass
        yield
