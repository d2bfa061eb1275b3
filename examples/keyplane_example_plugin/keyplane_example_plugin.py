"""An example keyplane plugin: API keys generate documents only with `documents:bulk`."""

from __future__ import annotations

from typing import ClassVar

from keyplane.errors import Forbidden
from keyplane.permissions.checks import CheckRequest


class BulkDocuments:
    name = "bulk_documents"
    scopes: ClassVar = {"documents:bulk": "Generate documents with an API key (example plugin)."}

    async def __call__(self, request: CheckRequest) -> None:
        if (
            request.field == "generateDocument"
            and request.principal.key is not None
            and "documents:bulk" not in request.restrictions.extra_scopes
        ):
            raise Forbidden(
                "generateDocument needs the documents:bulk scope for API keys.",
                required_scopes=["documents:bulk"],
            )
