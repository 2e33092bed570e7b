"""Starlette routes of the vector API; `vector_routes(manager)` returns them for the app to mount.

Errors are the REST API's (`edgenode.api.errors`): `{"error": {"code", "message"}}`, 400 for a
malformed body or a bad value (naming the problem), 422 `invalid_field` for a body that does not
match the request type (naming the field), 404 for an unknown collection, 503 while a collection
is being replaced.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgenode.api.errors import ApiError, error_response, read_json
from edgenode.api.routing import read_route, write_route
from edgenode.vectors.models import (
    CollectionInfo,
    CollectionList,
    CollectionSpec,
    SearchBatchResult,
    SearchRequest,
    SearchResult,
)
from edgenode.vectors.state import Collection


class Vectors(Protocol):
    """What the routes call (`VectorManager`)."""

    @property
    def collections(self) -> dict[str, Collection]: ...

    def get(self, name: str) -> Collection: ...

    async def put_collection(self, name: str, spec: CollectionSpec) -> tuple[int, CollectionInfo]: ...

    async def delete_collection(self, name: str) -> None: ...

    async def rebuild(self, name: str) -> CollectionInfo: ...

    async def search(self, name: str, req: SearchRequest) -> SearchResult | SearchBatchResult: ...


_encoder = msgspec.json.Encoder()


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def _error(exc: ApiError) -> Response:
    # Rendered here as well as by the node app's handler: the routes also serve bare Starlette apps.
    return error_response(exc.status, exc.code, exc.message, **exc.extra)


async def _body(request: Request, kind: type[Any]) -> Any:
    return await read_json(request, kind)


def vector_routes(manager: Vectors) -> list[Route]:
    async def list_collections(request: Request) -> Response:
        return _json(CollectionList([c.info() for c in manager.collections.values()]))

    async def get_collection(request: Request) -> Response:
        try:
            return _json(manager.get(request.path_params["name"]).info())
        except ApiError as exc:
            return _error(exc)

    async def put_collection(request: Request) -> Response:
        try:
            spec = await _body(request, CollectionSpec)
            status, info = await manager.put_collection(request.path_params["name"], spec)
            return _json(info, status)
        except ApiError as exc:
            return _error(exc)

    async def delete_collection(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await manager.delete_collection(name)
            return _json({"name": name, "deleted": True})
        except ApiError as exc:
            return _error(exc)

    async def rebuild_collection(request: Request) -> Response:
        try:
            return _json(await manager.rebuild(request.path_params["name"]), 202)
        except ApiError as exc:
            return _error(exc)

    async def search(request: Request) -> Response:
        try:
            manager.get(request.path_params["name"])  # 404 before judging the body
            req = await _body(request, SearchRequest)
            return _json(await manager.search(request.path_params["name"], req))
        except ApiError as exc:
            return _error(exc)

    return [
        read_route("/api/v1/collections", list_collections, methods=["GET"]),
        read_route("/api/v1/collections/{name}", get_collection, methods=["GET"]),
        write_route("/api/v1/collections/{name}", put_collection, methods=["PUT"]),
        write_route("/api/v1/collections/{name}", delete_collection, methods=["DELETE"]),
        write_route("/api/v1/collections/{name}/rebuild", rebuild_collection, methods=["POST"]),
        read_route("/api/v1/collections/{name}/search", search, methods=["POST"]),
    ]
