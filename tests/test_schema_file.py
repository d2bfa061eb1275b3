"""The committed schema.graphql is the API's contract: it must match the code."""

from __future__ import annotations

from pathlib import Path

from keyplane.schema.root import schema

SDL_PATH = Path(__file__).parents[1] / "src" / "keyplane" / "schema" / "schema.graphql"


def test_committed_sdl_matches_the_schema_built_from_code() -> None:
    committed = SDL_PATH.read_text().strip()
    assert committed == schema.as_str().strip(), "schema drifted: run `make schema` and commit"
