"""VectorManager: the vector layer as one node component, wiring the parts that do the work.

| module | job |
|---|---|
| `registry.py` | open collections, matched to the definitions stored in the database |
| `builds.py` | open persisted files and catch up, or build a generation (checkpointed, resumable) |
| `changes.py` | the change-feed consumer: apply commits and syncs, save, rebuild, compact |
| `search.py` | search requests: checks, inline answers, the planner |
| `files.py` | a collection's files, written durably |
| `state.py` | one collection's state; background tasks |

Lifecycle (the API app's lifespan): `await manager.start()` registers the change listener and
opens each stored definition in the background (load persisted files and catch up, or build);
`await manager.stop()` persists what changed and closes files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from starlette.routing import BaseRoute

from edgenode import feed
from edgenode.api.component import Component
from edgenode.errors import DatabaseError
from edgenode.vectors.apply import Applier
from edgenode.vectors.builds import Builder
from edgenode.vectors.changes import ChangeConsumer
from edgenode.vectors.collections import DatabaseLike, load_definitions, rename_statements, renamed_away
from edgenode.vectors.exact import FILTER_TIMEOUT_MS
from edgenode.vectors.models import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Mode,
    SearchBatchResult,
    SearchRequest,
    SearchResult,
)
from edgenode.vectors.planner import PlannerSettings
from edgenode.vectors.registry import Registry
from edgenode.vectors.routes import vector_routes
from edgenode.vectors.search import Searcher
from edgenode.vectors.state import Collection, RetryingReads, Tasks

log = logging.getLogger(__name__)


class _FeedFloor:
    """The vector collections' place among the feed's consumers (edgenode.feed.Consumer), so other
    compactors (text, the change stream) keep what they still need. Its tables are not listed: the
    registry judges its own tables when a collection is dropped."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def feed_floor(self) -> int | None:
        collections = self.registry.collections.values()
        if not all(c.state == "ready" and not c.rebuilding for c in collections):
            return None
        return min((c.position for c in collections), default=2**62)

    def feed_tables(self) -> set[str]:
        return set()

    async def table_recreated(self, table: str) -> None:
        for name, c in list(self.registry.collections.items()):
            if c.spec.table == table:
                self.registry.rebuild(name)

    async def rename_statements(self, old: str, new: str) -> list[tuple[str, list]]:
        return rename_statements(await load_definitions(self.registry.db), old, new)

    def table_unfollowable(self, old: str, new: str) -> None:
        for c in self.registry.collections.values():
            if c.spec.table == old:
                c.state, c.error = "error", renamed_away(old, new)  # searches still answer from the index


class VectorManager(Component):
    """All vector collections of one node. Depends only on Database.read/write/add_change_listener."""

    name = "vectors"

    def __init__(
        self,
        db: DatabaseLike,
        data_dir: Path,
        *,
        planner: PlannerSettings | None = None,
        persist_interval: float = 30.0,
        rebuild_deleted_fraction: float = 0.2,
        compact_threshold: int = 20_000,
        compact_retain: int = 10_000,
        build_threads: int | None = None,
        build_checkpoint_rows: int = 50_000,
        filter_timeout_ms: int = FILTER_TIMEOUT_MS,
    ) -> None:
        self.db = RetryingReads(db)
        self.root = Path(data_dir) / "vectors"
        self.tasks = Tasks()
        applier = Applier(self.db, build_threads or os.cpu_count() or 1)
        self.builder = Builder(self.db, applier, self.tasks, checkpoint_rows=build_checkpoint_rows)
        self.registry = Registry(self.db, self.root, self.builder, self.tasks)
        self.changes = ChangeConsumer(
            self.db,
            self.registry,
            self.builder,
            applier,
            self.tasks,
            persist_interval=persist_interval,
            rebuild_deleted_fraction=rebuild_deleted_fraction,
            compact_threshold=compact_threshold,
            compact_retain=compact_retain,
        )
        self.searcher = Searcher(self.registry.get, self.db, planner or PlannerSettings(), filter_timeout_ms)
        self._feed_floor = _FeedFloor(self.registry)  # held here: the feed keeps consumers weakly
        self._listening = False
        self._waiting_for_db: str | None = None

    @property
    def collections(self) -> dict[str, Collection]:
        return self.registry.collections

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self.changes.stopped = False
        if not self._listening:
            self.db.add_change_listener(self.changes.on_change)
            # At start, not at construction: the database may be attached after (RetryingReads.inner).
            feed.add_consumer(self.db, self._feed_floor)
            self._listening = True
        try:
            await self.registry.refresh()
        except DatabaseError as exc:
            if exc.status != 503:
                raise
            # A new replica whose primary is not reachable yet has no data to read: the node stays
            # up (health, status, readiness say why) and the collections load once it has.
            log.warning("vector collections wait for the database: %s", exc)
            self._waiting_for_db = str(exc)
            self.tasks.spawn(self._refresh_when_available())

    async def _refresh_when_available(self) -> None:
        delay = 0.5
        while not self.changes.stopped:
            await asyncio.sleep(delay)
            try:
                await self.registry.refresh()
            except DatabaseError as exc:
                if exc.status != 503:
                    log.exception("loading vector collections failed")
                    return
                self._waiting_for_db = str(exc)
                delay = min(delay * 2, 5.0)
                continue
            self._waiting_for_db = None
            log.info("vector collections loaded")
            return

    async def stop(self) -> None:
        self.changes.stopped = True
        for c in list(self.collections.values()):
            await self.tasks.cancel(c)
            if c.state == "ready" and c.dirty:
                try:
                    await self.builder.save(c)
                except Exception:
                    log.exception("saving vector index %s failed", c.name)
            c.close()
        self.collections.clear()
        await self.tasks.cancel_shared()

    async def wait_ready(self, name: str | None = None, wait_seconds: float = 60.0) -> None:
        """Until the named (or every) collection is ready; raises on error or timeout (tests, CLI)."""
        deadline = time.monotonic() + wait_seconds
        while True:
            targets = [self.collections[name]] if name else list(self.collections.values())
            if all(c.state == "ready" and not c.rebuilding for c in targets):
                return
            if time.monotonic() > deadline:
                errors = "; ".join(f"{c.name}: {c.error}" for c in targets if c.error)
                raise TimeoutError(f"collections not ready after {wait_seconds}s {errors}".strip())
            await asyncio.sleep(0.01)

    def status(self) -> dict[str, Any]:
        return {
            name: {"state": c.state, "size": c.index.live if c.index else 0, "position": c.position}
            for name, c in self.collections.items()
        }

    def not_ready_reason(self) -> str | None:
        # Loading a persisted index takes well under a second per 100k vectors, so readiness waits
        # for it: a node that says ready answers searches. Builds can take minutes and the node
        # serves every other route meanwhile, so they do not hold readiness back.
        if self._waiting_for_db:
            return f"waiting for the database: {self._waiting_for_db}"
        loading = sorted(name for name, c in self.collections.items() if c.state == "loading")
        if loading:
            return f"loading vector collection(s) {', '.join(loading)} from disk"
        return None

    def routes(self) -> list[BaseRoute]:
        return list(vector_routes(self))

    # -- what the routes and in-process callers use ----------------------------------------------

    def get(self, name: str) -> Collection:
        return self.registry.get(name)

    async def refresh(self) -> None:
        await self.registry.refresh()

    async def on_change(self) -> None:
        await self.changes.on_change()

    async def put_collection(self, name: str, spec: CollectionSpec) -> tuple[int, CollectionInfo]:
        return await self.registry.put(name, spec)

    async def delete_collection(self, name: str) -> None:
        await self.registry.delete(name)

    async def rebuild(self, name: str) -> CollectionInfo:
        return self.registry.rebuild(name)

    async def search(self, name: str, req: SearchRequest) -> SearchResult | SearchBatchResult:
        return await self.searcher.search(name, req)

    async def query(
        self,
        name: str,
        vectors: np.ndarray,
        k: int = 10,
        *,
        filter: Filter | None = None,
        mode: Mode = "auto",
        ef: int | None = None,
        include: Sequence[str] = (),
    ) -> list[SearchResult]:
        """In-process search (see `Searcher.query`)."""
        return await self.searcher.query(name, vectors, k, filter=filter, mode=mode, ef=ef, include=include)
