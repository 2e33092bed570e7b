"""A local-first node's outbox API: `GET /api/v1/outbox`, `GET /api/v1/outbox/{write_id}`,
`GET /api/v1/conflicts`, `POST /api/v1/conflicts/{write_id}/retry`, `DELETE /api/v1/conflicts/{write_id}`
(mounted only in `--write-mode local-first`; the semantics are in docs/local-first.md)."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from edgenode.api import schemas
from edgenode.api.component import Component
from edgenode.api.routing import read_route, write_route
from edgenode.replica.local_first import LocalFirst


def _json(value: Any, kind: type) -> Response:
    return Response(msgspec.json.encode(msgspec.convert(value, kind)), media_type="application/json")


class OutboxComponent(Component):
    name = "outbox"

    def __init__(self, lf: LocalFirst) -> None:
        self.lf = lf

    def routes(self) -> list[BaseRoute]:
        return [
            read_route("/api/v1/outbox", self.outbox, methods=["GET"]),
            read_route("/api/v1/outbox/{write_id}", self.entry, methods=["GET"]),
            read_route("/api/v1/conflicts", self.conflicts, methods=["GET"]),
            write_route("/api/v1/conflicts/{write_id}/retry", self.retry, methods=["POST"]),
            write_route("/api/v1/conflicts/{write_id}", self.discard, methods=["DELETE"]),
        ]

    def status(self) -> dict[str, Any]:
        return {"node_id": self.lf.node_id, **self.lf.status_extra()}

    async def outbox(self, request: Request) -> Response:
        return _json(await self.lf.outbox(), schemas.OutboxResponse)

    async def entry(self, request: Request) -> Response:
        return _json(await self.lf.entry(request.path_params["write_id"]), schemas.OutboxEntry)

    async def conflicts(self, request: Request) -> Response:
        return _json({"conflicts": await self.lf.conflicts()}, schemas.ConflictList)

    async def retry(self, request: Request) -> Response:
        return _json(await self.lf.resolve(request.path_params["write_id"], "retry"), schemas.RetryResponse)

    async def discard(self, request: Request) -> Response:
        return _json(await self.lf.resolve(request.path_params["write_id"], "discard"), schemas.DiscardResponse)
