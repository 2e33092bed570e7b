"""The node component serving Hrana at the host root (`/v2/pipeline`, `/v3/cursor`, `/v1/execute`, ...).

The REST auth middleware lets `/v1/`, `/v2`, `/v3` through untouched: the Hrana server checks the
same tokens itself and answers in Hrana's error format (401 without a valid token; a read token
gets read-only sessions).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import BaseRoute

from edgenode.api.component import Component
from edgenode.auth import Access, Authenticator
from edgenode.config import Settings
from edgenode.database import Database
from edgenode.hrana.server import HranaServer
from edgenode.metrics import NodeMetrics


class HranaComponent(Component):
    name = "hrana"

    def __init__(
        self, settings: Settings, db: Database, authenticator: Authenticator | None = None, *, stateless: bool = False
    ) -> None:
        self.settings = settings
        self.db = db
        self.authenticator = authenticator or Authenticator.from_settings(
            settings.auth_token, settings.read_token, settings.jwt_key_file
        )
        self.metrics: NodeMetrics | None = None
        # A statement waiting for a lease outlasts the holder's transaction timeout by a margin.
        self.backend = db.connections(lease_timeout=settings.transaction_timeout + 1.0)
        self.server = HranaServer(
            self.backend,
            self._authenticate,
            idle_timeout=settings.stream_idle_timeout,
            transaction_timeout=settings.transaction_timeout,
            max_body_bytes=settings.max_body_bytes,
            on_request=self._on_request,
            on_error=self._on_error,
            stateless=stateless,  # an HTTP worker's: its streams end with their request
        )

    def _authenticate(self, request: Request) -> Access:
        return self.authenticator.check(request.headers.get("authorization"))

    def bind_metrics(self, metrics: NodeMetrics) -> None:
        """Called by `create_app` with the node's metrics registry."""
        self.metrics = metrics

    def _on_request(self, endpoint: str) -> None:
        if self.metrics is not None:
            self.metrics.hrana_requests.labels(endpoint).inc()

    def _on_error(self, code: str) -> None:
        if self.metrics is not None:
            self.metrics.hrana_errors.labels(code).inc()

    def routes(self) -> list[BaseRoute]:
        return list(self.server.routes())

    async def start(self) -> None:
        await self.backend.start()

    async def stop(self) -> None:
        # Rolls back open transactions and gives leased connections back before the database closes.
        await self.server.aclose()
        await self.backend.stop()

    def status(self) -> dict[str, Any]:
        return {
            "open_streams": self.server.open_streams,
            "requests": dict(self.server.request_counts),
            "errors": dict(self.server.error_counts),
        }
