"""Starlette routes of the vector API; `vector_routes(manager)` returns them for the app to mount.

Errors leave as `{"error": {"code", "message"}}`: 400 for bad input (naming the field or the
problem), 404 for an unknown collection, 503 while a collection is still building.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgenode import bodies
from edgenode.api.routing import read_route, write_route
from edgenode.vectors.models import (
    CollectionInfo,
    CollectionList,
    CollectionSpec,
    ErrorBody,
    ErrorResponse,
    SearchBatchResult,
    SearchRequest,
    SearchResult,
    VectorError,
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


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(_encoder.encode(content), status_code=status, media_type="application/json", headers=headers)


def _error(exc: VectorError) -> Response:
    headers = {"Retry-After": "1"} if exc.status == 503 else None
    return _json(ErrorResponse(ErrorBody(exc.code, exc.message)), exc.status, headers)


async def _body(request: Request, kind: type[Any]) -> Any:
    # The rules are edgenode.bodies'; a wrong field is 400 here (the vector API's convention).
    try:
        return await bodies.read_json(request, kind)
    except bodies.BodyError as exc:
        if exc.reason == "invalid":
            raise VectorError(400, "invalid_request", exc.message) from None
        raise VectorError(exc.status, exc.code, exc.message) from None


def vector_routes(manager: Vectors) -> list[Route]:
    async def list_collections(request: Request) -> Response:
        return _json(CollectionList([c.info() for c in manager.collections.values()]))

    async def get_collection(request: Request) -> Response:
        try:
            return _json(manager.get(request.path_params["name"]).info())
        except VectorError as exc:
            return _error(exc)

    async def put_collection(request: Request) -> Response:
        try:
            spec = await _body(request, CollectionSpec)
            status, info = await manager.put_collection(request.path_params["name"], spec)
            return _json(info, status)
        except VectorError as exc:
            return _error(exc)

    async def delete_collection(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            await manager.delete_collection(name)
            return _json({"name": name, "deleted": True})
        except VectorError as exc:
            return _error(exc)

    async def rebuild_collection(request: Request) -> Response:
        try:
            return _json(await manager.rebuild(request.path_params["name"]), 202)
        except VectorError as exc:
            return _error(exc)

    async def search(request: Request) -> Response:
        try:
            manager.get(request.path_params["name"])  # 404 before judging the body
            req = await _body(request, SearchRequest)
            return _json(await manager.search(request.path_params["name"], req))
        except VectorError as exc:
            return _error(exc)

    return [
        read_route("/api/v1/collections", list_collections, methods=["GET"]),
        read_route("/api/v1/collections/{name}", get_collection, methods=["GET"]),
        write_route("/api/v1/collections/{name}", put_collection, methods=["PUT"]),
        write_route("/api/v1/collections/{name}", delete_collection, methods=["DELETE"]),
        write_route("/api/v1/collections/{name}/rebuild", rebuild_collection, methods=["POST"]),
        read_route("/api/v1/collections/{name}/search", search, methods=["POST"]),
    ]
