"""`Component`: a part of the node with routes and a lifecycle (vector indexes, Hrana, the replica's sync)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from starlette.routing import BaseRoute

from edgenode.metrics import NodeMetrics


class Component(ABC):
    name: str

    @abstractmethod
    def routes(self) -> list[BaseRoute]: ...

    async def start(self) -> None:
        """Called after the database started, in the order the components were given."""
        return None

    async def stop(self) -> None:
        """Called before the database stops, in reverse order."""
        return None

    @abstractmethod
    def status(self) -> dict[str, Any]: ...

    def not_ready_reason(self) -> str | None:
        return None

    def bind_metrics(self, metrics: NodeMetrics) -> None:
        """Called by `create_app` with the node's metrics registry."""
        return None
