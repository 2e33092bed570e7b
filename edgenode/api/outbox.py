"""A local-first node's outbox API: `GET /api/v1/outbox`, `GET /api/v1/outbox/{write_id}`,
`GET /api/v1/conflicts`, `POST /api/v1/conflicts/{write_id}/retry`, `DELETE /api/v1/conflicts/{write_id}`
(served in `--write-mode local-first`; the semantics are in docs/local-first.md). On any other
node the same paths answer 404 `not_local_first`, saying why there is no outbox and how to get one."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from edgenode.api import schemas
from edgenode.api.component import Component
from edgenode.api.errors import ApiError
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


class NoOutboxComponent(Component):
    """The outbox paths on a node that has no outbox: a 404 that says so, rather than "no route"."""

    name = "outbox"

    def __init__(self, replica: bool) -> None:
        self.reason = (
            "this node forwards its writes to the primary (write_mode forward): it has no outbox"
            if replica
            else "this node is standalone (no --primary-url): its writes commit here and it has no outbox"
        )

    def routes(self) -> list[BaseRoute]:
        return [
            read_route("/api/v1/outbox", self.refuse, methods=["GET"]),
            read_route("/api/v1/outbox/{write_id}", self.refuse, methods=["GET"]),
            read_route("/api/v1/conflicts", self.refuse, methods=["GET"]),
            write_route("/api/v1/conflicts/{write_id}/retry", self.refuse, methods=["POST"]),
            write_route("/api/v1/conflicts/{write_id}", self.refuse, methods=["DELETE"]),
        ]

    def status(self) -> dict[str, Any]:
        return {"local_first": False}

    async def refuse(self, request: Request) -> Response:
        raise ApiError(
            404,
            "not_local_first",
            f"{self.reason}; the outbox and conflicts exist in local-first mode only: start a replica with "
            "--primary-url and --write-mode local-first (EDGENODE_WRITE_MODE=local-first)",
        )
