"""Parsed and validated documents, kept across requests.

Strawberry's ParserCache and ValidationCache keep them as schema extensions. Any extension costs
every operation (each item of a batch too) four hook contexts built per operation and a
generator per hook: with those two as our only extensions, that machinery cost more than the
parsing and validation they saved. Here one bounded LRU cache, keyed by the query text, holds
each document with its validation errors, and KeyplaneSchema consults it when it makes an
operation's execution context: no extension hook runs on any operation.
"""

from __future__ import annotations

from functools import lru_cache

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules
from strawberry.extensions.query_depth_limiter import create_validator
from strawberry.schema.schema import validate_document

# Built once: a rule class made per request (as `lambda: QueryDepthLimiter(...)` does) would be
# a new class each time.
DEPTH_RULE = create_validator(max_depth=10, should_ignore=None)
VALIDATION_RULES = (*specified_rules, DEPTH_RULE)

# Bounded in count, as Strawberry's caches are, and in size: unique query texts sent to a public
# endpoint cannot grow memory without limit, nor can 128 bodies of 2 MiB each.
MAXSIZE = 128
MAX_KEPT_QUERY_CHARS = 16 * 1024

Checked = tuple[DocumentNode, list[GraphQLError]]


def checked(schema: GraphQLSchema, query: str) -> Checked:
    """The query's document and its validation errors (empty: valid) against the schema.

    A syntax error raises and is not kept. The error list is shared by every request sending
    the query: nothing changes it in place (MaskInternalErrors gives a result a new list)."""
    if len(query) > MAX_KEPT_QUERY_CHARS:
        return _check(schema, query)
    return _kept(schema, query)


def _check(schema: GraphQLSchema, query: str) -> Checked:
    document = parse(query)
    return document, validate_document(schema, document, VALIDATION_RULES)


_kept = lru_cache(maxsize=MAXSIZE)(_check)
