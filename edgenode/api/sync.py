"""The replica's API component: `POST /api/v1/sync`, its status block and its metrics."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from edgenode.api.component import Component
from edgenode.api.errors import ApiError
from edgenode.api.routing import write_route
from edgenode.api.schemas import SyncResponse
from edgenode.metrics import NodeMetrics
from edgenode.replica.database import ReplicaDatabase
from edgenode.replica.scheduler import SyncFailed


class SyncComponent(Component):
    name = "sync"

    def __init__(self, db: ReplicaDatabase) -> None:
        self.db = db

    def routes(self) -> list[BaseRoute]:
        return [write_route("/api/v1/sync", self.sync, methods=["POST"])]

    def status(self) -> dict[str, Any]:
        return {"state": self.db.scheduler.state, "lag_seconds": self.db.status()["lag_seconds"]}

    def bind_metrics(self, metrics: NodeMetrics) -> None:
        """The replica's collector joins the node's registry."""
        metrics.registry.register(self.db.collector)

    async def sync(self, request: Request) -> Response:
        """Run a sync now (one that starts after this request; POST needs the read-write token)."""
        try:
            outcome = await self.db.scheduler.sync_after()
        except SyncFailed as exc:
            raise ApiError(503, "sync_failed", f"the sync failed: {exc}; reads go on from the local replica") from exc
        position = self.db.position()
        body = SyncResponse(
            generation=position.generation,
            frame=position.frame,
            frames_applied=outcome.frames,
            duration_ms=round(outcome.duration * 1000, 3),
            state=self.db.scheduler.state,
        )
        return Response(msgspec.json.encode(body), media_type="application/json")
