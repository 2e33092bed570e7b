"""Starlette routes of the text API (`/api/v1/text`); `text_routes(manager)` returns them for the
app to mount. The routes and their errors are those of every derived-collection kind
(`edgenode.api.collection_routes`); a text query's syntax error is a 400 naming the place."""

from __future__ import annotations

from starlette.routing import Route

from edgenode.api.collection_routes import CollectionKind, collection_routes
from edgenode.text.models import SearchRequest, TextCollectionList, TextSpec


def text_routes(manager: CollectionKind) -> list[Route]:
    return collection_routes(
        "/api/v1/text", manager, spec_type=TextSpec, search_type=SearchRequest, listing=TextCollectionList
    )
