"""`ChangesComponent`: the change stream as a part of the node (its hub, its routes)."""

from __future__ import annotations

from typing import Any

from starlette.routing import BaseRoute

from edgenode.api.component import Component
from edgenode.auth import Authenticator
from edgenode.changes.hub import ChangeHub
from edgenode.changes.routes import change_routes
from edgenode.config import Settings


class ChangesComponent(Component):
    name = "changes"

    def __init__(self, settings: Settings, db: Any, authenticator: Authenticator | None = None) -> None:
        authenticator = authenticator or Authenticator.from_settings(
            settings.auth_token, settings.read_token, settings.jwt_key_file
        )
        self.hub = ChangeHub(
            db,
            authenticator,
            retention=settings.changes_retention,
            buffer=settings.changes_buffer,
            heartbeat=settings.changes_heartbeat,
        )

    def routes(self) -> list[BaseRoute]:
        return change_routes(self.hub)

    async def start(self) -> None:
        await self.hub.start()

    async def stop(self) -> None:
        await self.hub.stop()

    def status(self) -> dict[str, Any]:
        return self.hub.status()
