"""`Node`: what request handlers reach through `request.app.state.node`."""

from __future__ import annotations

import time

from edgenode import startup
from edgenode.api.component import Component
from edgenode.config import Settings
from edgenode.database import Database
from edgenode.metrics import NodeMetrics


class Node:
    def __init__(self, settings: Settings, db: Database, metrics: NodeMetrics, components: list[Component]) -> None:
        self.settings = settings
        self.db = db
        self.metrics = metrics
        self.components = components
        self.started_at = time.monotonic()

    def not_ready_reason(self) -> str | None:
        reason = self.db.not_ready_reason()
        if reason:
            return reason
        for component in self.components:
            reason = component.not_ready_reason()
            if reason:
                return f"{component.name}: {reason}"
        startup.ready()
        return None
