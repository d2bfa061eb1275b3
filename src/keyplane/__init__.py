"""keyplane: a GraphQL server that issues, scopes, limits, meters and revokes API keys."""

__version__ = "0.1.0"
