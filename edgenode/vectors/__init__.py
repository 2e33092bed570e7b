"""Vector search over F32_BLOB columns: HNSW (hnswlib) + exact (sqlite-vec), kept current by a change feed.

Integration: `VectorManager(db, data_dir)` is a node component (name, routes(), start(), stop(),
status(), not_ready_reason()); `component(settings, db)` builds it from settings, and
`vector_routes(manager)` gives its Starlette routes.
"""

from __future__ import annotations

from typing import Any

from edgenode.vectors.manager import VectorManager
from edgenode.vectors.routes import vector_routes

__all__ = ["VectorManager", "component", "vector_routes"]


def component(settings: Any, db: Any) -> VectorManager:
    return VectorManager(db, settings.data_path)
