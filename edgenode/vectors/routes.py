"""Starlette routes of the vector API (`/api/v1/collections`); `vector_routes(manager)` returns them
for the app to mount. The routes and their errors are those of every derived-collection kind
(`edgenode.api.collection_routes`)."""

from __future__ import annotations

from starlette.routing import Route

from edgenode.api.collection_routes import CollectionKind, collection_routes
from edgenode.vectors.models import CollectionList, CollectionSpec, SearchRequest


def vector_routes(manager: CollectionKind) -> list[Route]:
    return collection_routes(
        "/api/v1/collections", manager, spec_type=CollectionSpec, search_type=SearchRequest, listing=CollectionList
    )
