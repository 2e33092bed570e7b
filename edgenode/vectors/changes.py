"""The change-feed consumer: after each local commit (standalone) or applied sync (replica) the
database awaits `on_change`, which reloads definitions and applies the feed past each
collection's position; it also decides when an index is saved, rebuilt, or the feed compacted."""

from __future__ import annotations

import logging
import time

from edgenode import feed
from edgenode.vectors.apply import Applier
from edgenode.vectors.builds import Builder
from edgenode.vectors.collections import DatabaseLike
from edgenode.vectors.registry import Registry
from edgenode.vectors.state import Collection, Tasks

log = logging.getLogger(__name__)


class ChangeConsumer:
    def __init__(
        self,
        db: DatabaseLike,
        registry: Registry,
        builder: Builder,
        applier: Applier,
        tasks: Tasks,
        *,
        persist_interval: float,
        rebuild_deleted_fraction: float,
        compact_threshold: int,
        compact_retain: int,
    ) -> None:
        self.db = db
        self.registry = registry
        self.builder = builder
        self.applier = applier
        self.tasks = tasks
        self.persist_interval = persist_interval
        self.rebuild_deleted_fraction = rebuild_deleted_fraction
        self.compact_threshold = compact_threshold
        self.compact_retain = compact_retain
        self.stopped = False
        self._compacting = False

    async def on_change(self) -> None:
        """The database's change listener: new definitions, then the feed past each position."""
        if self.stopped:
            return  # the database has no way to remove a listener; a stopped consumer ignores it
        await self.registry.refresh()
        collections = self.registry.collections
        for c in list(collections.values()):
            if c.state == "ready" and not c.closing:
                try:
                    await self._apply(c)
                    c.error = None
                except Exception as exc:
                    # e.g. the table was dropped: keep serving what is indexed, say why it is stale
                    log.exception("applying the change feed to %s failed", c.name)
                    c.error = f"{type(exc).__name__}: {exc}"
        if not self._compacting and collections:
            self._compacting = True
            self.tasks.spawn(self._compact())

    async def _apply(self, c: Collection) -> None:
        async with c.apply_lock:
            if c.index is None or c.sidecar is None:
                return
            head = await feed.head(self.db)
            if head <= c.position:
                return
            if c.position < await feed.compacted_through(self.db):
                if not c.rebuilding:
                    log.warning("feed compacted past %s's position; rebuilding from a full scan", c.name)
                    c.rebuilding = True
                    self.tasks.spawn(self.builder.full_build(c), c)
                return
            c.position = await self.applier.apply_range(c, c.sidecar, c.index, c.position, head)
        if c.index.total > 1000 and c.index.deleted_fraction > self.rebuild_deleted_fraction and not c.rebuilding:
            c.rebuilding = True
            self.tasks.spawn(self.builder.rebuild_index(c), c)
        elif c.dirty and time.monotonic() - c.last_save > self.persist_interval:
            self.tasks.spawn(self.builder.save(c), c)

    async def _compact(self) -> None:
        """Trim the feed to what every local collection applied, keeping `compact_retain` for replicas."""
        try:
            collections = self.registry.collections
            if not all(c.state == "ready" and not c.rebuilding for c in collections.values()):
                return
            result = await self.db.read(f"SELECT min(seq), max(seq) FROM {feed.CHANGES_TABLE}")
            low, high = result.rows[0] if result.rows else (None, None)
            if low is None or high - low + 1 < self.compact_threshold:
                return
            floor = min(c.position for c in collections.values())
            for other in feed.consumers(self.db):  # text collections read the same feed
                other_floor = other.feed_floor()
                if other_floor is None:
                    return
                floor = min(floor, other_floor)
            through = min(floor, high - self.compact_retain)
            if through >= low:
                await self.db.write(feed.compact_statements(through))
        except Exception:
            log.exception("compacting the change feed failed")
        finally:
            self._compacting = False
