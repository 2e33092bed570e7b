"""The node's open collections, matched to the definitions stored in the database.

Definitions live in the database (`collections.py`), so a PUT on a primary-backed node reaches
every replica; each node opens what the definitions name and drops what they no longer name.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path

from edgenode import feed
from edgenode.api.errors import ApiError
from edgenode.vectors.builds import Builder
from edgenode.vectors.collections import (
    DatabaseLike,
    check_against_table,
    check_name,
    delete_statements,
    heal_replace_triggers,
    load_definitions,
    put_statements,
    unique_keys,
)
from edgenode.vectors.models import CollectionInfo, CollectionSpec
from edgenode.vectors.state import Collection, Tasks

log = logging.getLogger(__name__)


class Registry:
    def __init__(self, db: DatabaseLike, root: Path, builder: Builder, tasks: Tasks) -> None:
        self.db = db
        self.root = root
        self.builder = builder
        self.tasks = tasks
        self.collections: dict[str, Collection] = {}
        self._refresh_lock = asyncio.Lock()
        self._swept = False  # stale directories removed once since start

    def get(self, name: str) -> Collection:
        c = self.collections.get(name)
        if c is None:
            raise ApiError(404, "collection_not_found", f"no collection named {name!r}")
        return c

    async def refresh(self) -> None:
        """Match open collections to the stored definitions (new, replaced, deleted)."""
        async with self._refresh_lock:
            defs = await load_definitions(self.db)
            changed = self._swept is False
            for name, definition in defs.items():
                current = self.collections.get(name)
                if current is not None and current.definition.uid == definition.uid:
                    continue
                if current is not None:
                    await self._drop(current)
                c = Collection(definition, self.root / f"{name}-{definition.uid[:12]}")
                self.collections[name] = c
                self.tasks.spawn(self.builder.open(c), c)
                changed = True
            for name in [n for n in self.collections if n not in defs]:
                await self._drop(self.collections.pop(name))
                changed = True
            if changed:  # not after every write: only when the set of collections changed
                await asyncio.to_thread(self._remove_stale_dirs, {c.dir.name for c in self.collections.values()})
                self._swept = True

    def _remove_stale_dirs(self, keep: set[str]) -> None:
        for stale in self.root.glob("*-*"):
            if stale.is_dir() and stale.name not in keep:
                shutil.rmtree(stale, ignore_errors=True)

    async def _drop(self, c: Collection) -> None:
        await self.tasks.cancel(c)
        await asyncio.to_thread(c.close_under_swap)
        await asyncio.to_thread(shutil.rmtree, c.dir, True)

    async def put(self, name: str, spec: CollectionSpec) -> tuple[int, CollectionInfo]:
        check_name(name)
        spec.validate()
        await check_against_table(self.db, spec)
        existing = (await load_definitions(self.db)).get(name)
        if existing is not None and existing.same_spec(spec):
            await heal_replace_triggers(self.db, spec.table)  # a PUT of the same spec picks up new unique keys
            if await feed.refollow(self.db, spec.table):  # dropped and created again: rebuilt
                log.warning("the change-feed triggers of %s were gone; reinstalled them, rebuilding", spec.table)
                await self.refresh()
                return 202, self.get(name).info()
            await self.refresh()
            return 200, self.get(name).info()
        _, statements = put_statements(name, spec, await unique_keys(self.db, spec.table))
        await self.db.write(statements)
        await self.refresh()
        return 202, self.get(name).info()  # accepted: the index builds in the background

    async def delete(self, name: str) -> None:
        defs = await load_definitions(self.db)
        definition = defs.get(name)
        if definition is None:
            raise ApiError(404, "collection_not_found", f"no collection named {name!r}")
        still_used = any(d.spec.table == definition.spec.table for n, d in defs.items() if n != name) or any(
            definition.spec.table in other.feed_tables() for other in feed.consumers(self.db)
        )
        await self.db.write(delete_statements(name, definition.spec.table, still_used))
        await self.refresh()

    def rebuild(self, name: str) -> CollectionInfo:
        c = self.get(name)
        if not c.rebuilding:
            c.rebuilding = True
            self.tasks.spawn(self.builder.full_build(c), c)
        return c.info()
