"""REST routes of a kind of derived collection: vector collections and text collections alike.

Both kinds are indexes the node derives from a table and keeps current from the change feed, and
both are managed the same way over HTTP: list, get, put (create or replace), delete, rebuild,
search. `collection_routes` builds those six routes for one kind, so the two APIs cannot drift.

Errors are the REST API's (`edgenode.api.errors`): `{"error": {"code", "message"}}`, 400 for a
malformed body or a bad value (naming the problem, or the place in a text query), 422
`invalid_field` for a body that does not match the request type (naming the field), 404 for an
unknown collection, 503 while a collection is being replaced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edgenode.api.errors import ApiError, error_response, read_json
from edgenode.api.routing import read_route, write_route


class CollectionKind(Protocol):
    """What the routes call: a manager of one kind of collection (`VectorManager`, `TextManager`)."""

    @property
    def collections(self) -> dict[str, Any]: ...

    def get(self, name: str) -> Any: ...

    async def put_collection(self, name: str, spec: Any) -> tuple[int, Any]: ...

    async def delete_collection(self, name: str) -> None: ...

    async def rebuild(self, name: str) -> Any: ...

    async def search(self, name: str, req: Any) -> Any: ...


_encoder = msgspec.json.Encoder()


def _json(content: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(content), status_code=status, media_type="application/json")


def _error(exc: ApiError) -> Response:
    # Rendered here as well as by the node app's handler: the routes also serve bare Starlette apps.
    return error_response(exc.status, exc.code, exc.message, **exc.extra)


def collection_routes(
    prefix: str,
    manager: CollectionKind,
    *,
    spec_type: type[Any],
    search_type: type[Any],
    listing: Callable[[list[Any]], Any],
) -> list[Route]:
    """The routes under `prefix` (e.g. /api/v1/collections); `listing` wraps the infos of GET prefix."""

    async def list_collections(request: Request) -> Response:
        return _json(listing([c.info() for c in manager.collections.values()]))

    async def get_collection(request: Request) -> Response:
        try:
            return _json(manager.get(request.path_params["name"]).info())
        except ApiError as exc:
            return _error(exc)

    async def put_collection(request: Request) -> Response:
        try:
            spec = await read_json(request, spec_type)
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
            req = await read_json(request, search_type)
            return _json(await manager.search(request.path_params["name"], req))
        except ApiError as exc:
            return _error(exc)

    return [
        read_route(prefix, list_collections, methods=["GET"]),
        read_route(prefix + "/{name}", get_collection, methods=["GET"]),
        write_route(prefix + "/{name}", put_collection, methods=["PUT"]),
        write_route(prefix + "/{name}", delete_collection, methods=["DELETE"]),
        write_route(prefix + "/{name}/rebuild", rebuild_collection, methods=["POST"]),
        read_route(prefix + "/{name}/search", search, methods=["POST"]),
    ]
