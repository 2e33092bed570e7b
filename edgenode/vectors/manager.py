"""VectorManager: every collection of one node, kept current from the change feed.

Lifecycle (the API app's lifespan): `await manager.start()` registers the change listener and
opens each stored definition in the background (load persisted files and catch up, or build);
`await manager.stop()` persists what changed and closes files. After each local commit
(standalone) or applied sync (replica) the database awaits `on_change`, which reloads definitions
and applies the feed past each collection's position.

Files, per collection definition: `<data_dir>/vectors/<name>-<uid12>/` with `current.json`
(generation), `sidecar-<gen>.sqlite` (vectors + filter columns + position) and
`index-<gen>.hnsw(.json)` (HNSW + stamp). A full rebuild writes generation n+1 while n keeps
serving, then swaps. A build checkpoints every `build_checkpoint_rows` rows (index saved, then
`build.json` naming the generation, its feed position and the last rowid read), so a build
interrupted by a stop or a crash resumes there: rows read before the checkpoint are not read
again, and changes since the build began come from the feed as for any build.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy as np

from edgenode.api.component import Component
from edgenode.durable import atomic_write
from edgenode.errors import DatabaseError
from edgenode.rwlock import RWLock
from edgenode.vectors import feed
from edgenode.vectors.collections import (
    DatabaseLike,
    Definition,
    check_against_table,
    check_name,
    delete_statements,
    load_definitions,
    put_statements,
    table_columns,
    unique_keys,
)
from edgenode.vectors.exact import Sidecar
from edgenode.vectors.hnsw import FORMAT, HnswIndex, Stamp
from edgenode.vectors.models import (
    CollectionInfo,
    CollectionSpec,
    VectorError,
)
from edgenode.vectors.planner import PlannerSettings
from edgenode.vectors.search import SearchRequests

log = logging.getLogger(__name__)

PAGE = 2000  # rows per read while building (the node caps a read at max_rows)
FEED_BATCH = 5000  # feed entries per apply round


def _raw(value: Any) -> Any:
    """Values come back from Database.read JSON-ready: blobs as {"base64": ...}."""
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    return value


class _RetryingReads:
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

    async def write(self, statements: list[tuple[str, list]]) -> list[Any]:
        return await self.inner.write(statements)

    def add_change_listener(self, callback: Any) -> None:
        self.inner.add_change_listener(callback)


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


def _write_current(directory: Path, gen: int) -> None:
    tmp = directory / "current.json.tmp"
    tmp.write_text(json.dumps({"gen": gen}))
    os.replace(tmp, directory / "current.json")


BUILD_NOTE = "build.json"


def _forget_build(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / BUILD_NOTE).unlink()


def _remove_gen(sidecar_path: Path, index_path: Path) -> None:
    for path in (
        sidecar_path,
        sidecar_path.with_name(sidecar_path.name + "-wal"),
        sidecar_path.with_name(sidecar_path.name + "-shm"),
        index_path,
        index_path.with_name(index_path.name + ".json"),
        index_path.with_name(index_path.name + ".tmp"),
    ):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


class VectorManager(SearchRequests, Component):
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
    ) -> None:
        self.db: DatabaseLike = _RetryingReads(db)
        self.root = Path(data_dir) / "vectors"
        self.planner = planner or PlannerSettings()
        self.persist_interval = persist_interval
        self.rebuild_deleted_fraction = rebuild_deleted_fraction
        self.compact_threshold = compact_threshold
        self.compact_retain = compact_retain
        self.build_threads = build_threads or os.cpu_count() or 1
        self.build_checkpoint_rows = build_checkpoint_rows
        self.collections: dict[str, Collection] = {}
        self._refresh_lock = asyncio.Lock()
        self._compacting = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._stopped = False
        self._waiting_for_db: str | None = None

    # lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self._stopped = False
        if not self._started:
            self.db.add_change_listener(self.on_change)
            self._started = True
        try:
            await self.refresh()
        except DatabaseError as exc:
            if exc.status != 503:
                raise
            # A new replica whose primary is not reachable yet has no data to read: the node stays
            # up (health, status, readiness say why) and the collections load once it has.
            log.warning("vector collections wait for the database: %s", exc)
            self._waiting_for_db = str(exc)
            self._spawn(self._refresh_when_available())

    async def _refresh_when_available(self) -> None:
        delay = 0.5
        while not self._stopped:
            await asyncio.sleep(delay)
            try:
                await self.refresh()
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
        self._stopped = True  # the database has no way to remove a listener; a stopped manager ignores it
        for c in list(self.collections.values()):
            await self._cancel_tasks(c)
            if c.state == "ready" and c.dirty:
                try:
                    await self._save(c)
                except Exception:
                    log.exception("saving vector index %s failed", c.name)
            self._close(c)
        self.collections.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

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

    def routes(self) -> list[Any]:
        from edgenode.vectors.routes import vector_routes

        return vector_routes(self)

    def _spawn(self, coro: Coroutine[Any, Any, Any], c: Collection | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        owner = c.tasks if c is not None else self._tasks
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    async def _cancel_tasks(self, c: Collection) -> None:
        c.closing = True
        for task in list(c.tasks):
            task.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)

    def _close(self, c: Collection) -> None:
        if c.sidecar is not None:
            c.sidecar.close()

    # definitions -------------------------------------------------------------------------------
    async def refresh(self) -> None:
        """Match open collections to the stored definitions (new, replaced, deleted)."""
        async with self._refresh_lock:
            defs = await load_definitions(self.db)
            for name, definition in defs.items():
                current = self.collections.get(name)
                if current is not None and current.definition.uid == definition.uid:
                    continue
                if current is not None:
                    await self._drop(current)
                c = Collection(definition, self.root / f"{name}-{definition.uid[:12]}")
                self.collections[name] = c
                self._spawn(self._open(c), c)
            for name in [n for n in self.collections if n not in defs]:
                await self._drop(self.collections.pop(name))
            await asyncio.to_thread(self._remove_stale_dirs, {c.dir.name for c in self.collections.values()})

    def _remove_stale_dirs(self, keep: set[str]) -> None:
        for stale in self.root.glob("*-*"):
            if stale.is_dir() and stale.name not in keep:
                shutil.rmtree(stale, ignore_errors=True)

    async def _drop(self, c: Collection) -> None:
        await self._cancel_tasks(c)
        await asyncio.to_thread(self._close_under_swap, c)
        await asyncio.to_thread(shutil.rmtree, c.dir, True)

    def _close_under_swap(self, c: Collection) -> None:
        with c.swap.exclusive():
            self._close(c)
            c.index = None
            c.sidecar = None

    def get(self, name: str) -> Collection:
        c = self.collections.get(name)
        if c is None:
            raise VectorError(404, "collection_not_found", f"no collection named {name!r}")
        return c

    async def put_collection(self, name: str, spec: CollectionSpec) -> tuple[int, CollectionInfo]:
        check_name(name)
        spec.validate()
        await check_against_table(self.db, spec)
        existing = (await load_definitions(self.db)).get(name)
        if existing is not None and existing.same_spec(spec):
            await self._heal_replace_triggers(spec.table)  # a PUT of the same spec picks up new unique keys
            await self.refresh()
            return 200, self.get(name).info()
        _, statements = put_statements(name, spec, await unique_keys(self.db, spec.table))
        await self.db.write(statements)
        await self.refresh()
        return 202, self.get(name).info()  # accepted: the index builds in the background

    async def _heal_replace_triggers(self, table: str) -> None:
        """Reinstall the table's replace triggers when its unique keys changed since they were
        installed (or they come from an older edgenode); see edgenode.vectors.feed."""
        keys = await unique_keys(self.db, table)
        if not await feed.replace_triggers_current(self.db, table, keys):
            log.warning("the change-feed triggers of %s do not match its unique keys; reinstalling them", table)
            await self.db.write(feed.replace_trigger_statements(table, keys))

    async def _heal_in_background(self, c: Collection) -> None:
        try:
            await self._heal_replace_triggers(c.spec.table)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # On a replica whose primary is unreachable this waits for the next start or PUT.
            log.warning("could not check the change-feed triggers of %s: %s", c.spec.table, exc)

    async def delete_collection(self, name: str) -> None:
        defs = await load_definitions(self.db)
        definition = defs.get(name)
        if definition is None:
            raise VectorError(404, "collection_not_found", f"no collection named {name!r}")
        still_used = any(d.spec.table == definition.spec.table for n, d in defs.items() if n != name) or any(
            definition.spec.table in other.feed_tables() for other in feed.consumers(self.db)
        )
        await self.db.write(delete_statements(name, definition.spec.table, still_used))
        await self.refresh()

    async def rebuild(self, name: str) -> CollectionInfo:
        c = self.get(name)
        if not c.rebuilding:
            c.rebuilding = True
            self._spawn(self._full_build(c), c)
        return c.info()

    # opening and building ----------------------------------------------------------------------
    async def _open(self, c: Collection) -> None:
        self._spawn(self._heal_in_background(c), c)
        try:
            head = await feed.head(self.db)
            compacted = await feed.compacted_through(self.db)
            c.columns = await table_columns(self.db, c.spec.table)
            opened = await asyncio.to_thread(self._open_files, c, head, compacted)
            if opened is None:
                c.rebuilding = True
                await self._full_build(c)
                return
            gen, sidecar, index, index_position = opened
            if index is None:
                c.state = "building"
                started = time.monotonic()
                index = await asyncio.to_thread(self._index_from_sidecar, c, sidecar)
                index_position = sidecar.position
                c.builds += 1
                c.build_seconds = time.monotonic() - started
                c.dirty += 1
            else:
                c.loaded_from_disk = True
            async with c.apply_lock:
                low = min(index_position, sidecar.position)
                force_until = max(index_position, sidecar.position)
                position = await self._apply_range(c, sidecar, index, low, force_until=force_until)
                c.gen, c.sidecar, c.index, c.position = gen, sidecar, index, position
                c.state, c.error, c.failures = "ready", None, 0
                c.progress = 1.0
            if c.dirty:
                await self._save(c)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("opening vector collection %s failed", c.name)
            self._failed(c, exc)

    def _open_files(
        self, c: Collection, head: int, compacted: int
    ) -> tuple[int, Sidecar, HnswIndex | None, int] | None:
        """Persisted sidecar (+ index if it checks out), or None when a full build is needed."""
        try:
            gen = int(json.loads((c.dir / "current.json").read_text())["gen"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        sidecar_path, index_path = c.files(gen)
        if not sidecar_path.exists():
            return None
        try:
            sidecar = Sidecar(sidecar_path, c.spec, c.definition.uid)
            ok = sidecar.stamped_identity() == sidecar.identity() and compacted <= sidecar.position <= head
        except Exception:
            log.warning("vector sidecar %s is unreadable; rebuilding", sidecar_path)
            return None
        if not ok:
            sidecar.close()
            return None
        loaded = HnswIndex.load(index_path, c.expected_stamp(), c.spec.hnsw.ef_search)
        if loaded is None:
            log.warning("vector index %s is missing, corrupt or foreign; rebuilding from the sidecar", index_path)
            return gen, sidecar, None, sidecar.position
        index, stamp = loaded
        if not compacted <= stamp.position <= head:
            return gen, sidecar, None, sidecar.position
        return gen, sidecar, index, stamp.position

    def _new_index(self, c: Collection, capacity: int) -> HnswIndex:
        h = c.spec.hnsw
        return HnswIndex(c.spec.metric, c.spec.dim, h.m, h.ef_construction, h.ef_search, capacity=capacity)

    def _index_from_sidecar(self, c: Collection, sidecar: Sidecar) -> HnswIndex:
        total = sidecar.count()
        index = self._new_index(c, int(total * 1.1) + 16)
        done = 0
        for rowids, vectors in sidecar.iter_vectors():
            index.bulk_add(vectors, rowids, threads=self.build_threads)
            done += len(rowids)
            c.progress = done / total if total else 1.0
        return index

    async def _full_build(self, c: Collection) -> None:
        """Replica rows -> a new sidecar + index generation, caught up and swapped in."""
        try:
            for _ in range(3):
                if await self._build_once(c):
                    return
                log.warning("the change feed was compacted past the start of %s's build; building again", c.name)
            raise RuntimeError("the change feed was compacted past the start of three builds in a row")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("building vector collection %s failed", c.name)
            if c.index is None:
                self._failed(c, exc)
            else:
                c.error = f"{type(exc).__name__}: {exc}"  # the old index keeps serving
        finally:
            c.rebuilding = False

    async def _build_once(self, c: Collection) -> bool:
        """One build; False when the feed was compacted past its start (nothing swapped in)."""
        started = time.monotonic()
        sidecar: Sidecar | None = None
        try:
            if c.index is None:
                c.state = "building"
            c.progress = 0.0
            await asyncio.to_thread(c.dir.mkdir, parents=True, exist_ok=True)
            if not c.columns:
                c.columns = await table_columns(self.db, c.spec.table)
            total = int((await self.db.read(f'SELECT count(*) FROM "{c.spec.table}"')).rows[0][0])
            gen = c.gen + 1
            sidecar_path, index_path = c.files(gen)
            resumed = await asyncio.to_thread(self._resume_build, c, gen, await feed.compacted_through(self.db))
            if resumed is not None:
                sidecar, index, position, last, done = resumed
                c.resumed_from = done
                log.info("resuming the build of %s after %d rows (rowid %d)", c.name, done, last)
            else:
                position = await feed.head(self.db)
                await asyncio.to_thread(_remove_gen, sidecar_path, index_path)
                sidecar = await asyncio.to_thread(Sidecar, sidecar_path, c.spec, c.definition.uid)
                index = self._new_index(c, int(total * 1.1) + 16)
                last, done = None, 0
            cols = ", ".join(f'"{name}"' for name in [c.spec.column, *c.spec.filter_columns])
            base = f'SELECT rowid, {cols} FROM "{c.spec.table}"'
            since_checkpoint = 0
            while True:
                if last is None:
                    result = await self.db.read(f"{base} ORDER BY rowid LIMIT {PAGE}")
                else:
                    result = await self.db.read(
                        f"{base} WHERE rowid > CAST(? AS INTEGER) ORDER BY rowid LIMIT {PAGE}", [str(last)]
                    )
                if not result.rows:
                    break
                last = int(result.rows[-1][0])
                rows = [(int(r[0]), list(r[1:])) for r in result.rows]
                await asyncio.to_thread(self._apply_rows, c, sidecar, index, rows, None, True, True)
                done += len(rows)
                since_checkpoint += len(rows)
                c.progress = min(done / max(total, done), 0.999) if total else 0.999
                if since_checkpoint >= self.build_checkpoint_rows:
                    await asyncio.to_thread(self._checkpoint_build, c, gen, index, position, last, done)
                    since_checkpoint = 0
            if position < await feed.compacted_through(self.db):
                # Another node compacted the feed past where this build began: the changes since
                # then are gone, so the rows read are not enough. Start over from a fresh scan.
                await asyncio.to_thread(_forget_build, c.dir)
                return False
            async with c.apply_lock:
                await asyncio.to_thread(sidecar.apply, [], [], position)
                position = await self._apply_range(c, sidecar, index, position, force_until=2**62)
                await asyncio.to_thread(sidecar.stamp_identity)
                old = (c.sidecar, c.gen)
                await asyncio.to_thread(self._swap, c, sidecar, index)
                c.gen, c.position = gen, position
                sidecar = None
                await asyncio.to_thread(_write_current, c.dir, gen)
                if old[0] is not None:
                    old[0].close()
                    await asyncio.to_thread(_remove_gen, *c.files(old[1]))
                c.state, c.error, c.progress, c.failures = "ready", None, 1.0, 0
                await asyncio.to_thread(_forget_build, c.dir)
                c.builds += 1
                c.build_seconds = round(time.monotonic() - started, 3)
                c.dirty += 1
            await self._save(c)
            return True
        finally:
            if sidecar is not None:
                sidecar.close()

    def _checkpoint_build(self, c: Collection, gen: int, index: HnswIndex, position: int, last: int, done: int) -> None:
        """Index first, then the note that names it: a crash between them leaves an older note
        whose index stamp no longer matches, and the build starts over."""
        _, index_path = c.files(gen)
        stamp = index.save(index_path, c.definition.uid, position)
        note = {
            "uid": c.definition.uid,
            "gen": gen,
            "position": position,
            "last": last,
            "done": done,
            "sha256": stamp.sha256,
        }
        atomic_write(c.dir / BUILD_NOTE, json.dumps(note).encode())

    def _resume_build(self, c: Collection, gen: int, compacted: int) -> tuple[Sidecar, HnswIndex, int, int, int] | None:
        """The checkpointed state of an interrupted build of generation `gen`, when it is still
        usable: same definition, its feed position not compacted away, files intact."""
        try:
            note = json.loads((c.dir / BUILD_NOTE).read_text())
            uid, note_gen, position = note["uid"], int(note["gen"]), int(note["position"])
            last, done, sha256 = int(note["last"]), int(note["done"]), str(note["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        sidecar_path, index_path = c.files(gen)
        if uid != c.definition.uid or note_gen != gen or position < compacted or not sidecar_path.exists():
            return None
        loaded = HnswIndex.load(index_path, c.expected_stamp(), c.spec.hnsw.ef_search)
        if loaded is None or loaded[1].sha256 != sha256 or loaded[1].position != position:
            return None
        try:
            sidecar = Sidecar(sidecar_path, c.spec, c.definition.uid)
        except Exception:
            return None
        return sidecar, loaded[0], position, last, done

    def _failed(self, c: Collection, exc: Exception) -> None:
        """State "error", and another attempt later: the database may only be briefly unavailable."""
        c.state, c.error = "error", f"{type(exc).__name__}: {exc}"
        delay = min(60.0, 0.5 * 2**c.failures)
        c.failures += 1
        if not c.closing:
            self._spawn(self._retry_open(c, delay), c)

    async def _retry_open(self, c: Collection, delay: float) -> None:
        await asyncio.sleep(delay)
        if not c.closing and c.index is None:
            await self._open(c)

    def _swap(self, c: Collection, sidecar: Sidecar, index: HnswIndex) -> None:
        with c.swap.exclusive():
            c.sidecar, c.index = sidecar, index

    async def _rebuild_index(self, c: Collection) -> None:
        """Index only, from the sidecar (too many deleted slots); the old index serves meanwhile."""
        try:
            assert c.sidecar is not None
            started = time.monotonic()
            async with c.apply_lock:
                low = c.position
            index = await asyncio.to_thread(self._index_from_sidecar, c, c.sidecar)
            async with c.apply_lock:
                position = await self._apply_range(c, c.sidecar, index, low, force_until=2**62)
                await asyncio.to_thread(self._swap, c, c.sidecar, index)
                c.position = position
                c.builds += 1
                c.build_seconds = round(time.monotonic() - started, 3)
                c.dirty += 1
            await self._save(c)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rebuilding vector index %s failed", c.name)
        finally:
            c.rebuilding = False

    async def _save(self, c: Collection) -> None:
        async with c.apply_lock:
            if c.index is None:
                return
            _, index_path = c.files(c.gen)
            await asyncio.to_thread(c.index.save, index_path, c.definition.uid, c.position)
            c.dirty = 0
            c.last_save = time.monotonic()

    # change feed -------------------------------------------------------------------------------
    async def on_change(self) -> None:
        """The database's change listener: new definitions, then the feed past each position."""
        if self._stopped:
            return
        await self.refresh()
        for c in list(self.collections.values()):
            if c.state == "ready" and not c.closing:
                try:
                    await self._apply(c)
                    c.error = None
                except Exception as exc:
                    # e.g. the table was dropped: keep serving what is indexed, say why it is stale
                    log.exception("applying the change feed to %s failed", c.name)
                    c.error = f"{type(exc).__name__}: {exc}"
        if not self._compacting and self.collections:
            self._compacting = True
            self._spawn(self._compact())

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
                    self._spawn(self._full_build(c), c)
                return
            c.position = await self._apply_range(c, c.sidecar, c.index, c.position, head)
        if c.index.total > 1000 and c.index.deleted_fraction > self.rebuild_deleted_fraction and not c.rebuilding:
            c.rebuilding = True
            self._spawn(self._rebuild_index(c), c)
        elif c.dirty and time.monotonic() - c.last_save > self.persist_interval:
            self._spawn(self._save(c), c)

    async def _apply_range(
        self,
        c: Collection,
        sidecar: Sidecar,
        index: HnswIndex,
        low: int,
        high: int | None = None,
        force_until: int = 0,
    ) -> int:
        """Apply feed entries (low, high] to one sidecar + index pair; the caller holds apply_lock."""
        if high is None:
            high = await feed.head(self.db)
        columns = [c.spec.column, *c.spec.filter_columns]
        position = low
        while position < high:
            upper = min(high, position + FEED_BATCH)
            rows = await feed.changed_rows(self.db, c.spec.table, columns, position, upper)
            force = position < force_until
            await asyncio.to_thread(self._apply_rows, c, sidecar, index, rows, upper, force, False)
            position = upper
        return position

    def _vector(self, c: Collection, value: Any) -> tuple[bytes, np.ndarray] | None:
        blob = _raw(value)
        if not isinstance(blob, bytes) or len(blob) != c.spec.dim * 4:
            return None
        vector = np.frombuffer(blob, dtype="<f4")
        if not np.isfinite(vector).all():
            return None
        if c.spec.metric == "cosine" and not np.any(vector):
            return None
        return blob, vector

    def _apply_rows(
        self,
        c: Collection,
        sidecar: Sidecar,
        index: HnswIndex,
        rows: list[tuple[int, list[Any] | None]],
        position: int | None,
        force: bool,
        fresh: bool,
    ) -> None:
        upserts: list[tuple[int, bytes, list[Any], np.ndarray]] = []
        deletes: list[int] = []
        for rowid, values in rows:
            parsed = self._vector(c, values[0]) if values is not None else None
            if parsed is None:
                if values is not None:
                    c.skipped += 1  # NULL, wrong length or non-finite: not indexable, so not indexed
                if not fresh:
                    deletes.append(rowid)
                continue
            assert values is not None
            upserts.append((rowid, parsed[0], [_raw(v) for v in values[1:]], parsed[1]))
        if not force and upserts:
            stored = sidecar.current([u[0] for u in upserts])
            upserts = [u for u in upserts if stored.get(u[0]) != (u[1], u[2])]
        sidecar.apply([(r, b, f) for r, b, f, _ in upserts], deletes, position)
        if upserts:
            vectors = np.stack([u[3] for u in upserts])
            rowids = [u[0] for u in upserts]
            if fresh:
                index.bulk_add(vectors, np.asarray(rowids, dtype=np.int64), threads=self.build_threads)
            else:
                index.upsert(vectors, rowids)
        if deletes:
            index.delete(deletes)
        c.dirty += len(upserts) + len(deletes)

    async def _compact(self) -> None:
        """Trim the feed to what every local collection applied, keeping `compact_retain` for replicas."""
        try:
            if not all(c.state == "ready" and not c.rebuilding for c in self.collections.values()):
                return
            result = await self.db.read(f"SELECT min(seq), max(seq) FROM {feed.CHANGES_TABLE}")
            low, high = result.rows[0] if result.rows else (None, None)
            if low is None or high - low + 1 < self.compact_threshold:
                return
            floor = min(c.position for c in self.collections.values())
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
