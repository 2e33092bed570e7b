"""`Collection`: the state of one open collection (definition, files, index, feed position, builds),
and `RetryingReads`, the database as the vector layer reads it."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from edgenode.rwlock import RWLock
from edgenode.vectors.collections import DatabaseLike, Definition
from edgenode.vectors.exact import Sidecar
from edgenode.vectors.hnsw import FORMAT, HnswIndex, Stamp
from edgenode.vectors.models import CollectionInfo


def raw(value: Any) -> Any:
    """Values come back from Database.read JSON-ready: blobs as {"base64": ...}."""
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    return value


class RetryingReads:
    """Database reads retried when the node says it is briefly unavailable (503, e.g. a reader restarting)."""

    def __init__(self, db: DatabaseLike) -> None:
        self.inner = db

    async def read(self, sql: str, params: list | None = None, **kw: Any) -> Any:
        for attempt in range(6):
            try:
                return await self.inner.read(sql, params, **kw)
            except Exception as exc:
                if getattr(exc, "status", None) != 503 or attempt == 5:
                    raise
                await asyncio.sleep(0.05 * 2**attempt)
        raise AssertionError("unreachable")

    async def write(self, statements: list[tuple[str, list]]) -> Any:
        return await self.inner.write(statements)

    def add_change_listener(self, callback: Any) -> None:
        self.inner.add_change_listener(callback)

    def may_have_table(self, name: str) -> bool:
        return self.inner.may_have_table(name)

    def feed_bound(self) -> int | None:
        return self.inner.feed_bound()


class Collection:
    def __init__(self, definition: Definition, directory: Path) -> None:
        self.definition = definition
        self.spec = definition.spec
        self.dir = directory
        self.sidecar: Sidecar | None = None
        self.index: HnswIndex | None = None
        self.gen = 0
        self.state = "loading"
        self.error: str | None = None
        self.position = 0
        self.progress = 0.0
        self.build_seconds: float | None = None
        self.builds = 0
        self.loaded_from_disk = False
        self.skipped = 0
        self.apply_lock = asyncio.Lock()
        self.swap = RWLock()  # searches share it; swapping in rebuilt structures takes it exclusively
        self.tasks: set[asyncio.Task[Any]] = set()
        self.dirty = 0
        self.last_save = time.monotonic()
        self.columns: dict[str, str] = {}
        self.rebuilding = False
        self.closing = False
        self.failures = 0
        self.resumed_from = 0  # rows a resumed build found already indexed

    @property
    def name(self) -> str:
        return self.definition.name

    def files(self, gen: int) -> tuple[Path, Path]:
        return self.dir / f"sidecar-{gen}.sqlite", self.dir / f"index-{gen}.hnsw"

    def expected_stamp(self) -> Stamp:
        h = self.spec.hnsw
        return Stamp(FORMAT, self.definition.uid, self.spec.metric, self.spec.dim, h.m, h.ef_construction, 0, 0)

    def new_index(self, capacity: int) -> HnswIndex:
        h = self.spec.hnsw
        return HnswIndex(self.spec.metric, self.spec.dim, h.m, h.ef_construction, h.ef_search, capacity=capacity)

    def swap_in(self, sidecar: Sidecar, index: HnswIndex) -> None:
        """Replace the structures searches use (blocking: waits for running searches)."""
        with self.swap.exclusive():
            self.sidecar, self.index = sidecar, index

    def close(self) -> None:
        if self.sidecar is not None:
            self.sidecar.close()

    def close_under_swap(self) -> None:
        with self.swap.exclusive():
            self.close()
            self.index = None
            self.sidecar = None

    def info(self) -> CollectionInfo:
        size = self.index.live if self.index is not None else 0
        return CollectionInfo(
            name=self.name,
            table=self.spec.table,
            column=self.spec.column,
            dim=self.spec.dim,
            metric=self.spec.metric,
            filter_columns=self.spec.filter_columns,
            hnsw=self.spec.hnsw,
            size=size,
            state=self.state,  # type: ignore[arg-type]
            position=self.position,
            build_seconds=self.build_seconds,
            progress=round(self.progress, 4),
            deleted=len(self.index.deleted) if self.index is not None else 0,
            skipped=self.skipped,
            loaded_from_disk=self.loaded_from_disk,
            builds=self.builds,
            resumed_from=self.resumed_from,
            error=self.error,
        )


class Tasks:
    """Background tasks of the vector layer: per collection (cancelled when it closes) or shared."""

    def __init__(self) -> None:
        self.shared: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any], c: Collection | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        owner = c.tasks if c is not None else self.shared
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    @staticmethod
    async def cancel(c: Collection) -> None:
        c.closing = True
        for task in list(c.tasks):
            task.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)

    async def cancel_shared(self) -> None:
        for task in list(self.shared):
            task.cancel()
        await asyncio.gather(*self.shared, return_exceptions=True)
