"""Starlette routes of the text API; `text_routes(manager)` returns them for the app to mount.

Errors are the REST API's (edgenode.api.errors): `{"error": {"code", "message"}}`, 400 for a bad
value naming the problem or the place in the query, 422 `invalid_field` for a body that does not
match the request type, 404 for an unknown collection, 503 while a collection is being replaced.
"""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgenode.api.errors import ApiError
from edgenode.api.routing import read_route, write_route
from edgenode.text.models import (
    SearchRequest,
    SearchResult,
    TextCollectionInfo,
    TextCollectionList,
    TextSpec,
)
from edgenode.vectors.routes import _body, _error, _json


class Texts(Protocol):
    """What the routes call (`TextManager`)."""

    @property
    def collections(self) -> dict[str, Any]: ...

    def get(self, name: str) -> Any: ...

    async def put_collection(self, name: str, spec: TextSpec) -> tuple[int, TextCollectionInfo]: ...

    async def delete_collection(self, name: str) -> None: ...

    async def rebuild(self, name: str) -> TextCollectionInfo: ...

    async def search(self, name: str, req: SearchRequest) -> SearchResult: ...


def text_routes(manager: Texts) -> list[Route]:
    async def list_collections(request: Request) -> Response:
        return _json(TextCollectionList([c.info() for c in manager.collections.values()]))

    async def get_collection(request: Request) -> Response:
        try:
            return _json(manager.get(request.path_params["name"]).info())
        except ApiError as exc:
            return _error(exc)

    async def put_collection(request: Request) -> Response:
        try:
            spec = await _body(request, TextSpec)
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
        read_route("/api/v1/text", list_collections, methods=["GET"]),
        read_route("/api/v1/text/{name}", get_collection, methods=["GET"]),
        write_route("/api/v1/text/{name}", put_collection, methods=["PUT"]),
        write_route("/api/v1/text/{name}", delete_collection, methods=["DELETE"]),
        write_route("/api/v1/text/{name}/rebuild", rebuild_collection, methods=["POST"]),
        read_route("/api/v1/text/{name}/search", search, methods=["POST"]),
    ]
