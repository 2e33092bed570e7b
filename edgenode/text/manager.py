"""TextManager: every text collection of one node, kept current from the vectors' change feed.

A node component like VectorManager (start, stop, routes, status, not_ready_reason): after each
local commit (standalone) or applied sync (replica) the database awaits `on_change`, which picks
up new definitions and applies the feed past each collection's position.

Files, per definition: `<data_dir>/text/<name>-<uid12>/` with `current.json` (generation, written
durably) and `index-<gen>.sqlite` (FTS5 + filter columns + the feed position, one transaction per
applied batch, so the position on disk always matches the rows). A start finds the stamped
identity and a position the feed still covers, and catches up from there; anything else is a full
build into generation n+1 while n keeps serving. It registers as a consumer of the feed
(edgenode.feed), so the vector side's compaction keeps what text collections still need
and the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from starlette.routing import BaseRoute

from edgenode import feed
from edgenode.api.component import Component
from edgenode.api.errors import ApiError
from edgenode.durable import atomic_write
from edgenode.errors import DatabaseError
from edgenode.rwlock import RWLock
from edgenode.text import query
from edgenode.text.definitions import (
    TextDefinition,
    check_against_table,
    delete_statements,
    load_definitions,
    put_statements,
    rename_statements,
)
from edgenode.text.hybrid import fuse
from edgenode.text.index import TextIndex
from edgenode.text.models import (
    MAX_K,
    MAX_OFFSET,
    Hit,
    SearchRequest,
    SearchResult,
    TextCollectionInfo,
    TextSpec,
)
from edgenode.text.routes import text_routes
from edgenode.text.scoring import Mode
from edgenode.vectors.collections import DatabaseLike, check_name, renamed_away, table_columns, unique_keys
from edgenode.vectors.collections import load_definitions as load_vector_definitions
from edgenode.vectors.exact import FILTER_TIMEOUT_MS, CompiledFilter
from edgenode.vectors.manager import VectorManager
from edgenode.vectors.models import Filter
from edgenode.vectors.models import SearchRequest as VectorSearchRequest
from edgenode.vectors.state import RetryingReads

log = logging.getLogger(__name__)

PAGE = 1000  # rows per read while building: texts can be long, and a read comes back in one message
FEED_BATCH = 5000


def _words(req: SearchRequest) -> tuple[list[str], Mode] | None:
    """The words of a free-text query (checked already) and how they combine; None for FTS5 syntax."""
    if req.syntax == "fts5" or req.q is None:
        return None
    return query.free_words(req.q), "any" if req.syntax == "any" else "all"


class TextCollection:
    def __init__(self, definition: TextDefinition, directory: Path) -> None:
        self.definition = definition
        self.spec = definition.spec
        self.dir = directory
        self.index: TextIndex | None = None
        self.gen = 0
        self.state = "loading"
        self.error: str | None = None
        self.position = 0
        self.size = 0
        self.progress = 0.0
        self.build_seconds: float | None = None
        self.builds = 0
        self.loaded_from_disk = False
        self.apply_lock = asyncio.Lock()
        self.swap = RWLock()  # searches share it; swapping in a rebuilt index takes it exclusively
        self.tasks: set[asyncio.Task[Any]] = set()
        self.rebuilding = False
        self.closing = False
        self.failures = 0
        self.columns: dict[str, str] = {}  # the table's columns (for `include`), read when first needed

    @property
    def name(self) -> str:
        return self.definition.name

    def file(self, gen: int) -> Path:
        return self.dir / f"index-{gen}.sqlite"

    def info(self) -> TextCollectionInfo:
        return TextCollectionInfo(
            name=self.name,
            table=self.spec.table,
            columns=self.spec.columns,
            filter_columns=self.spec.filter_columns,
            tokenizer=self.spec.tokenizer,
            size=self.size,
            state=self.state,  # type: ignore[arg-type]
            position=self.position,
            build_seconds=self.build_seconds,
            progress=round(self.progress, 4),
            loaded_from_disk=self.loaded_from_disk,
            builds=self.builds,
            error=self.error,
        )


def _remove_files(path: Path) -> None:
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


class TextManager(Component):
    """All text collections of one node. `vectors` (optional) answers the vector arm of hybrid searches."""

    name = "text"

    def __init__(
        self,
        db: DatabaseLike,
        data_dir: Path,
        *,
        vectors: VectorManager | None = None,
        compact_threshold: int = 20_000,
        compact_retain: int = 10_000,
        filter_timeout_ms: int = FILTER_TIMEOUT_MS,
    ) -> None:
        self.db: DatabaseLike = RetryingReads(db)
        self.filter_timeout_ms = filter_timeout_ms
        self.root = Path(data_dir) / "text"
        self.vectors = vectors
        self.compact_threshold = compact_threshold
        self.compact_retain = compact_retain
        self.collections: dict[str, TextCollection] = {}
        self._refresh_lock = asyncio.Lock()
        self._swept = False  # stale directories removed once since start
        self._tasks: set[asyncio.Task[Any]] = set()
        self._compacting = False
        self.applied = 0  # rows applied from the feed, all collections (tells an apply that changed nothing)
        self._started = False
        self._stopped = False
        self._waiting_for_db: str | None = None
        feed.add_consumer(self.db, self)

    # feed consumer (edgenode.feed.Consumer) ----------------------------------------------
    def feed_floor(self) -> int | None:
        if not all(c.state == "ready" and not c.rebuilding for c in self.collections.values()):
            return None
        return min((c.position for c in self.collections.values()), default=2**62)

    def feed_tables(self) -> set[str]:
        return {c.spec.table for c in self.collections.values()}

    async def table_recreated(self, table: str) -> None:
        for name, c in list(self.collections.items()):
            if c.spec.table == table:
                await self.rebuild(name)

    async def rename_statements(self, old: str, new: str) -> list[tuple[str, list]]:
        return rename_statements(await load_definitions(self.db), old, new)

    def table_unfollowable(self, old: str, new: str) -> None:
        for c in self.collections.values():
            if c.spec.table == old:
                c.state, c.error = "error", renamed_away(old, new)  # searches still answer from the index

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
            log.warning("text collections wait for the database: %s", exc)
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
                    log.exception("loading text collections failed")
                    return
                self._waiting_for_db = str(exc)
                delay = min(delay * 2, 5.0)
                continue
            self._waiting_for_db = None
            return

    async def stop(self) -> None:
        self._stopped = True
        for c in list(self.collections.values()):
            await self._cancel_tasks(c)
            if c.index is not None:
                c.index.close()
        self.collections.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def wait_ready(self, name: str | None = None, wait_seconds: float = 60.0) -> None:
        deadline = time.monotonic() + wait_seconds
        while True:
            targets = [self.collections[name]] if name else list(self.collections.values())
            if all(c.state == "ready" and not c.rebuilding for c in targets):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"text collections not ready after {wait_seconds}s")
            await asyncio.sleep(0.01)

    def status(self) -> dict[str, Any]:
        return {n: {"state": c.state, "size": c.size, "position": c.position} for n, c in self.collections.items()}

    def not_ready_reason(self) -> str | None:
        # As for vectors: opening a persisted index holds readiness (it is quick), a build does not.
        if self._waiting_for_db:
            return f"waiting for the database: {self._waiting_for_db}"
        loading = sorted(n for n, c in self.collections.items() if c.state == "loading")
        return f"loading text collection(s) {', '.join(loading)} from disk" if loading else None

    def routes(self) -> list[BaseRoute]:
        return list(text_routes(self))

    def _spawn(self, coro: Coroutine[Any, Any, Any], c: TextCollection | None = None) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        owner = c.tasks if c is not None else self._tasks
        owner.add(task)
        task.add_done_callback(owner.discard)
        return task

    async def _cancel_tasks(self, c: TextCollection) -> None:
        c.closing = True
        for task in list(c.tasks):
            task.cancel()
        await asyncio.gather(*c.tasks, return_exceptions=True)

    # definitions -------------------------------------------------------------------------------
    async def refresh(self) -> None:
        async with self._refresh_lock:
            defs = await load_definitions(self.db, table_known=bool(self.collections))
            changed = self._swept is False
            for name, definition in defs.items():
                current = self.collections.get(name)
                if current is not None and current.definition.uid == definition.uid:
                    continue
                if current is not None:
                    await self._drop(current)
                c = TextCollection(definition, self.root / f"{name}-{definition.uid[:12]}")
                self.collections[name] = c
                self._spawn(self._open(c), c)
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

    async def _drop(self, c: TextCollection) -> None:
        await self._cancel_tasks(c)
        await asyncio.to_thread(self._close_under_swap, c)
        await asyncio.to_thread(shutil.rmtree, c.dir, True)

    def _close_under_swap(self, c: TextCollection) -> None:
        with c.swap.exclusive():
            if c.index is not None:
                c.index.close()
            c.index = None

    def get(self, name: str) -> TextCollection:
        c = self.collections.get(name)
        if c is None:
            raise ApiError(404, "collection_not_found", f"no text collection named {name!r}")
        return c

    async def put_collection(self, name: str, spec: TextSpec) -> tuple[int, TextCollectionInfo]:
        check_name(name)
        spec.validate()
        await check_against_table(self.db, spec)
        existing = (await load_definitions(self.db)).get(name)
        if existing is not None and existing.same_spec(spec):
            await self._heal_replace_triggers(spec.table)
            if await feed.refollow(self.db, spec.table):  # dropped and created again: rebuilt
                log.warning("the change-feed triggers of %s were gone; reinstalled them, rebuilding", spec.table)
                await self.refresh()
                return 202, self.get(name).info()
            await self.refresh()
            return 200, self.get(name).info()
        await self.db.write(put_statements(name, spec, await unique_keys(self.db, spec.table)))
        await self.refresh()
        return 202, self.get(name).info()  # accepted: the index builds in the background

    async def delete_collection(self, name: str) -> None:
        defs = await load_definitions(self.db)
        definition = defs.get(name)
        if definition is None:
            raise ApiError(404, "collection_not_found", f"no text collection named {name!r}")
        table = definition.spec.table
        still_used = any(d.spec.table == table for n, d in defs.items() if n != name) or any(
            d.spec.table == table for d in (await load_vector_definitions(self.db)).values()
        )
        await self.db.write(delete_statements(name, table, still_used))
        await self.refresh()

    async def rebuild(self, name: str) -> TextCollectionInfo:
        c = self.get(name)
        if not c.rebuilding:
            c.rebuilding = True
            self._spawn(self._full_build(c), c)
        return c.info()

    async def _heal_replace_triggers(self, table: str) -> None:
        """The table's replace triggers as its current unique keys call for (see edgenode.feed)."""
        keys = await unique_keys(self.db, table)
        if not await feed.replace_triggers_current(self.db, table, keys):
            log.warning("the change-feed triggers of %s do not match its unique keys; reinstalling them", table)
            await self.db.write(feed.replace_trigger_statements(table, keys))

    async def _heal_in_background(self, c: TextCollection) -> None:
        try:
            await self._heal_replace_triggers(c.spec.table)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not check the change-feed triggers of %s: %s", c.spec.table, exc)

    # opening and building ----------------------------------------------------------------------
    async def _open(self, c: TextCollection) -> None:
        self._spawn(self._heal_in_background(c), c)
        try:
            if await feed.recreated_before_start(self.db, c.spec.table):
                log.warning("table %s was dropped and created again; rebuilding %s from it", c.spec.table, c.name)
                await asyncio.to_thread(shutil.rmtree, c.dir, True)  # the old table's index
                c.rebuilding = True
                await self._full_build(c)
                return
            head = await feed.head(self.db)
            compacted = await feed.compacted_through(self.db)
            opened = await asyncio.to_thread(self._open_file, c, head, compacted)
            if opened is None:
                c.rebuilding = True
                await self._full_build(c)
                return
            gen, index = opened
            async with c.apply_lock:
                position = await self._apply_range(c, index, index.position, head)
                c.size = await asyncio.to_thread(index.count)
                c.gen, c.index, c.position = gen, index, position
                c.state, c.error, c.failures, c.progress, c.loaded_from_disk = "ready", None, 0, 1.0, True
            await self._catch_up_once_ready(c)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("opening text collection %s failed", c.name)
            self._failed(c, exc)

    def _open_file(self, c: TextCollection, head: int, compacted: int) -> tuple[int, TextIndex] | None:
        """The persisted index when it is this definition's and the feed still covers its position."""
        try:
            gen = int(json.loads((c.dir / "current.json").read_text())["gen"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        path = c.file(gen)
        if not path.exists():
            return None
        try:
            index = TextIndex(path, c.spec, c.definition.uid)  # type: ignore[arg-type]
            ok = index.stamped_identity() == index.identity() and compacted <= index.position <= head
        except Exception:
            log.warning("text index %s is unreadable; rebuilding", path)
            return None
        if not ok:
            index.close()
            return None
        return gen, index

    def _failed(self, c: TextCollection, exc: Exception) -> None:
        c.state, c.error = "error", f"{type(exc).__name__}: {exc}"
        delay = min(60.0, 0.5 * 2**c.failures)
        c.failures += 1
        if not c.closing:
            self._spawn(self._retry_open(c, delay), c)

    async def _retry_open(self, c: TextCollection, delay: float) -> None:
        await asyncio.sleep(delay)
        if not c.closing and c.index is None:
            await self._open(c)

    async def _full_build(self, c: TextCollection) -> None:
        try:
            for _ in range(3):
                if await self._build_once(c):
                    return
                log.warning("the change feed was compacted past the start of %s's build; building again", c.name)
            raise RuntimeError("the change feed was compacted past the start of three builds in a row")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("building text collection %s failed", c.name)
            if c.index is None:
                self._failed(c, exc)
            else:
                c.error = f"{type(exc).__name__}: {exc}"  # the old index keeps serving
        finally:
            c.rebuilding = False

    async def _build_once(self, c: TextCollection) -> bool:
        """Table rows -> a new generation, caught up from the feed and swapped in; False when the
        feed was compacted past the build's start (the rows read miss changes made since)."""
        started = time.monotonic()
        index: TextIndex | None = None
        try:
            if c.index is None:
                c.state = "building"
            c.progress = 0.0
            await asyncio.to_thread(c.dir.mkdir, parents=True, exist_ok=True)
            total = int((await self.db.read(f'SELECT count(*) FROM "{c.spec.table}"')).rows[0][0])
            gen = c.gen + 1
            path = c.file(gen)
            position = await feed.head(self.db)
            await asyncio.to_thread(_remove_files, path)
            index = await asyncio.to_thread(TextIndex, path, c.spec, c.definition.uid)  # type: ignore[arg-type]
            cols = ", ".join(f'"{n}"' for n in [*c.spec.columns, *c.spec.filter_columns])
            base = f'SELECT rowid, {cols} FROM "{c.spec.table}"'
            last: int | None = None
            done = 0
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
                await asyncio.to_thread(index.apply_rows, rows, None)
                done += len(rows)
                c.progress = min(done / max(total, done), 0.999) if total else 0.999
            if position < await feed.compacted_through(self.db):
                return False
            async with c.apply_lock:
                position = await self._apply_range(c, index, position, await feed.head(self.db))
                await asyncio.to_thread(index.apply_rows, [], position)
                await asyncio.to_thread(index.optimize)
                await asyncio.to_thread(index.stamp_identity)
                size = await asyncio.to_thread(index.count)
                old, old_gen = c.index, c.gen
                await asyncio.to_thread(self._swap, c, index)
                c.gen, c.position, c.size = gen, position, size
                index = None
                await asyncio.to_thread(atomic_write, c.dir / "current.json", json.dumps({"gen": gen}).encode())
                if old is not None:
                    old.close()
                    await asyncio.to_thread(_remove_files, c.file(old_gen))
                c.state, c.error, c.progress, c.failures = "ready", None, 1.0, 0
                c.builds += 1
                c.build_seconds = round(time.monotonic() - started, 3)
            await self._catch_up_once_ready(c)
            return True
        finally:
            if index is not None:
                index.close()

    async def _catch_up_once_ready(self, c: TextCollection) -> None:
        """Apply what was committed since the open or build last read the feed's head. `on_change`
        skips a collection that is not ready yet, so a write landing between that read and the
        collection turning ready was seen by nobody: no later wake-up would apply it until some
        other write came (a write right after a rename, while the renamed table's collections
        rebuild, stayed unsearchable). Reading the head again now that it is ready closes the gap:
        a change `on_change` skipped was committed before this read."""
        try:
            await self._apply(c)
        except Exception as exc:  # as in on_change: the next change retries
            log.exception("applying the change feed to text collection %s failed", c.name)
            c.error = f"{type(exc).__name__}: {exc}"

    def _swap(self, c: TextCollection, index: TextIndex) -> None:
        with c.swap.exclusive():
            c.index = index

    # change feed -------------------------------------------------------------------------------
    async def on_change(self) -> None:
        if self._stopped:
            return
        await self.refresh()
        for c in list(self.collections.values()):
            if c.state == "ready" and not c.closing:
                try:
                    await self._apply(c)
                    c.error = None
                except Exception as exc:
                    log.exception("applying the change feed to text collection %s failed", c.name)
                    c.error = f"{type(exc).__name__}: {exc}"
        if not self._compacting and self.collections:
            self._compacting = True
            self._spawn(self._compact())

    async def _apply(self, c: TextCollection) -> None:
        async with c.apply_lock:
            if c.index is None:
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
            before = self.applied
            c.position = await self._apply_range(c, c.index, c.position, head)
            if self.applied != before:  # rows of this table changed: its size may have
                c.size = await asyncio.to_thread(c.index.count)

    async def _apply_range(self, c: TextCollection, index: TextIndex, low: int, high: int) -> int:
        """Feed entries (low, high] into `index`, the position committed with each batch."""
        columns = [*c.spec.columns, *c.spec.filter_columns]
        position = low
        while position < high:
            upper = min(high, position + FEED_BATCH)
            rows = await feed.changed_rows(self.db, c.spec.table, columns, position, upper)
            self.applied += await asyncio.to_thread(index.apply_rows, rows, upper)
            position = upper
        return position

    def _vector_floor(self) -> int | None:
        vector_collections = self.vectors.collections if self.vectors is not None else {}
        if not all(v.state == "ready" and not v.rebuilding for v in vector_collections.values()):
            return None
        return min((v.position for v in vector_collections.values()), default=2**62)

    async def _compact(self) -> None:
        """Trim the feed to what every local consumer applied (the vector side does the same)."""
        try:
            floors = [self.feed_floor(), self._vector_floor()]
            if any(f is None for f in floors):
                return
            await feed.compact(self.db, min(floors), self.compact_threshold, self.compact_retain)  # type: ignore[type-var]
        except Exception:
            log.exception("compacting the change feed failed")
        finally:
            self._compacting = False

    # search ------------------------------------------------------------------------------------
    async def search(self, name: str, req: SearchRequest) -> SearchResult:
        started = time.perf_counter()
        c = self.get(name)
        if not 1 <= req.k <= MAX_K:
            raise ApiError(400, "invalid_k", f"k must be between 1 and {MAX_K}, got {req.k}")
        if not 0 <= req.offset <= MAX_OFFSET:
            raise ApiError(400, "invalid_offset", f"offset must be between 0 and {MAX_OFFSET}, got {req.offset}")
        if not 0 <= req.snippet_tokens <= 64:
            raise ApiError(
                400,
                "invalid_request",
                f"snippet_tokens must be between 0 (no snippets) and 64, got {req.snippet_tokens}",
            )
        weights = self._weights(c, req.weights)
        match = query.check(req.q, req.syntax)
        if req.vector is not None or req.collection is not None:
            return await self._hybrid(c, req, match, weights, started)
        await self._check_include(c, req.include)
        found = await asyncio.to_thread(
            self._text_search,
            c,
            (match, _words(req)),
            req.k,
            req.offset,
            weights,
            req.filter,
            req.snippet_tokens,
            req.q or "",
        )
        hits = [Hit(rowid, score, snippet) for rowid, score, snippet in found]
        await self._include(c, hits, req.include)
        return SearchResult(results=hits, mode="text", elapsed_ms=round((time.perf_counter() - started) * 1000, 3))

    async def _check_include(self, c: TextCollection, include: list[str]) -> None:
        if not include:
            return
        unknown = [col for col in include if col.lower() not in c.columns]
        if unknown:
            c.columns = await table_columns(self.db, c.spec.table)
            unknown = [col for col in include if col.lower() not in c.columns]
        if unknown:
            raise ApiError(400, "unknown_column", f"include: {unknown[0]!r} is not a column of table {c.spec.table!r}")

    async def _include(self, c: TextCollection, hits: list[Hit], include: list[str]) -> None:
        """The requested columns of each hit's row, read from the table (the index holds no rows)."""
        if not include or not hits:
            return
        cols = ", ".join(f'"{col}"' for col in include)
        ids = ",".join(str(h.rowid) for h in hits)
        result = await self.db.read(
            f'SELECT rowid, {cols} FROM "{c.spec.table}" WHERE rowid IN ({ids})', max_rows=len(hits) + 1
        )
        rows = {int(r[0]): dict(zip(include, r[1:], strict=True)) for r in result.rows}
        for h in hits:
            h.row = rows.get(h.rowid)

    @staticmethod
    def _weights(c: TextCollection, given: dict[str, float]) -> list[float]:
        lowered = {k.lower(): v for k, v in given.items()}
        columns = [col.lower() for col in c.spec.columns]
        unknown = [k for k in given if k.lower() not in columns]
        if unknown:
            raise ApiError(
                400, "invalid_weights", f"weights: {unknown[0]!r} is not a text column ({', '.join(c.spec.columns)})"
            )
        for k, v in given.items():
            if not math.isfinite(v) or not 0 <= v <= 1000:
                raise ApiError(400, "invalid_weights", f"weights: {k!r} must be between 0 and 1000, got {v}")
        return [float(lowered.get(col, 1.0)) for col in columns]

    def _text_search(
        self,
        c: TextCollection,
        what: tuple[str, tuple[list[str], Mode] | None],
        limit: int,
        offset: int,
        weights: list[float],
        flt: Filter | None,
        snippet_tokens: int,
        q: str,
    ) -> list[tuple[int, float, str | None]]:
        """Ranked hits with snippets (none when snippet_tokens is 0), on a worker thread. `what`:
        the FTS5 query and, for free text, its words (see TextIndex.rank)."""
        match, words = what
        with c.swap.shared():
            index = self._index(c)
            compiled: CompiledFilter | None = (
                index.compile_filter(flt.sql, flt.params, self.filter_timeout_ms) if flt else None
            )
            ranked = index.rank(match, limit, offset, weights, compiled, q, words)
            snippets = index.snippets(match, [r for r, _ in ranked], snippet_tokens, q, words[0] if words else None)
        return [(rowid, score, snippets.get(rowid)) for rowid, score in ranked]

    def _snippets(
        self, c: TextCollection, match: str, rowids: list[int], tokens: int, q: str, words: list[str] | None
    ) -> dict[int, str]:
        with c.swap.shared():
            return self._index(c).snippets(match, rowids, tokens, q, words)

    @staticmethod
    def _index(c: TextCollection) -> TextIndex:
        """The collection's index; the caller holds c.swap shared."""
        if c.index is None:
            raise ApiError(
                503,
                "collection_not_ready",
                f"text collection {c.name!r} is {c.state} ({c.progress:.0%}); retry shortly",
            )
        return c.index

    async def _vector_arm(self, collection: str, req: VectorSearchRequest) -> Any:
        try:
            return await self.vectors.search(collection, req)
        except ApiError as exc:  # the vector API's errors: say which collection they are about
            raise ApiError(exc.status, exc.code, f"vector collection {collection!r}: {exc.message}") from exc

    async def _hybrid(
        self, c: TextCollection, req: SearchRequest, match: str, weights: list[float], started: float
    ) -> SearchResult:
        if req.vector is None or req.collection is None:
            raise ApiError(400, "invalid_request", "a hybrid search needs both 'vector' and 'collection'")
        h = req.hybrid
        if not (math.isfinite(h.weight) and 0 <= h.weight <= 1):
            raise ApiError(400, "invalid_request", f"hybrid.weight must be between 0 and 1, got {h.weight}")
        if not 1 <= h.rank_constant <= 10_000:
            raise ApiError(
                400, "invalid_request", f"hybrid.rank_constant must be between 1 and 10000, got {h.rank_constant}"
            )
        if not 1 <= h.candidates <= MAX_K:
            raise ApiError(
                400, "invalid_request", f"hybrid.candidates must be between 1 and {MAX_K}, got {h.candidates}"
            )
        if req.k + req.offset > MAX_K:
            raise ApiError(400, "invalid_offset", f"in a hybrid search k + offset may be at most {MAX_K}")
        if self.vectors is None:
            raise ApiError(400, "invalid_request", "this node has no vector collections")
        vc = self.vectors.collections.get(req.collection)
        if vc is None:
            raise ApiError(400, "unknown_collection", f"no vector collection named {req.collection!r}")
        if vc.spec.table != c.spec.table:
            raise ApiError(
                400,
                "invalid_request",
                f"vector collection {req.collection!r} indexes table {vc.spec.table!r}, "
                f"text collection {c.name!r} indexes {c.spec.table!r}; hybrid search fuses rows of one table",
            )
        await self._check_include(c, req.include)
        n = max(h.candidates, req.k + req.offset)
        # Candidates without snippets: only the page's text hits get theirs, afterwards.
        text_arm = asyncio.to_thread(
            self._text_search, c, (match, _words(req)), n, 0, weights, req.filter, 0, req.q or ""
        )
        vector_arm = self._vector_arm(req.collection, VectorSearchRequest(vector=req.vector, k=n, filter=req.filter))
        text_hits, vector_result = await asyncio.gather(text_arm, vector_arm)
        fused = fuse(text_hits, [(v.rowid, v.distance) for v in vector_result.results], h.weight, h.rank_constant)
        page = fused[req.offset : req.offset + req.k]
        texts = [h.rowid for h in page if h.text_rank is not None]
        if texts and req.snippet_tokens:
            words = _words(req)
            snippets = await asyncio.to_thread(
                self._snippets, c, match, texts, req.snippet_tokens, req.q or "", words[0] if words else None
            )
            for h in page:
                h.snippet = snippets.get(h.rowid)
        await self._include(c, page, req.include)
        return SearchResult(
            results=page,
            mode="hybrid",
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )
