"""Opening and building collections: load persisted files and catch up, or build a generation.

A full rebuild writes generation n+1 while n keeps serving, then swaps. A build checkpoints every
`checkpoint_rows` rows (index saved, then `build.json` naming the generation, its feed position
and the last rowid read), so a build interrupted by a stop or a crash resumes there: rows read
before the checkpoint are not read again, and changes since the build began come from the feed
as for any build.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable

from edgenode import feed
from edgenode.vectors import files
from edgenode.vectors.apply import Applier
from edgenode.vectors.collections import DatabaseLike, heal_replace_triggers, table_columns
from edgenode.vectors.exact import Sidecar
from edgenode.vectors.hnsw import HnswIndex
from edgenode.vectors.state import Collection, Tasks

log = logging.getLogger(__name__)

PAGE = 2000  # rows per read while building (the node caps a read at max_rows)


class Builder:
    def __init__(self, db: DatabaseLike, applier: Applier, tasks: Tasks, *, checkpoint_rows: int) -> None:
        self.db = db
        self.applier = applier
        self.tasks = tasks
        self.checkpoint_rows = checkpoint_rows

    async def open(self, c: Collection) -> None:
        self.tasks.spawn(self._heal_in_background(c), c)
        try:
            if await feed.recreated_before_start(self.db, c.spec.table):
                log.warning("table %s was dropped and created again; rebuilding %s from it", c.spec.table, c.name)
                await asyncio.to_thread(shutil.rmtree, c.dir, True)  # the old table's index and build checkpoint
                c.rebuilding = True
                await self.full_build(c)
                return
            head = await feed.head(self.db)
            compacted = await feed.compacted_through(self.db)
            c.columns = await table_columns(self.db, c.spec.table)
            opened = await asyncio.to_thread(files.open_persisted, c, head, compacted)
            if opened is None:
                c.rebuilding = True
                await self.full_build(c)
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
                position = await self.applier.apply_range(c, sidecar, index, low, force_until=force_until)
                c.gen, c.sidecar, c.index, c.position = gen, sidecar, index, position
                c.state, c.error, c.failures = "ready", None, 0
                c.progress = 1.0
            await self.catch_up_once_ready(c)
            if c.dirty:
                await self.save(c)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("opening vector collection %s failed", c.name)
            self._failed(c, exc)

    async def _heal_in_background(self, c: Collection) -> None:
        try:
            await heal_replace_triggers(self.db, c.spec.table)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # On a replica whose primary is unreachable this waits for the next start or PUT.
            log.warning("could not check the change-feed triggers of %s: %s", c.spec.table, exc)

    def _index_from_sidecar(self, c: Collection, sidecar: Sidecar) -> HnswIndex:
        total = sidecar.count()
        index = c.new_index(int(total * 1.1) + 16)
        done = 0
        for rowids, vectors in sidecar.iter_vectors():
            index.bulk_add(vectors, rowids, threads=self.applier.build_threads)
            done += len(rowids)
            c.progress = done / total if total else 1.0
        return index

    async def full_build(self, c: Collection) -> None:
        """Table rows -> a new sidecar + index generation, caught up and swapped in."""
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
            resumed = await asyncio.to_thread(files.resume_build, c, gen, await feed.compacted_through(self.db))
            if resumed is not None:
                sidecar, index, position, last, done = resumed
                c.resumed_from = done
                log.info("resuming the build of %s after %d rows (rowid %d)", c.name, done, last)
            else:
                position = await feed.head(self.db)
                await asyncio.to_thread(files.remove_gen, sidecar_path, index_path)
                sidecar = await asyncio.to_thread(Sidecar, sidecar_path, c.spec, c.definition.uid)
                index = c.new_index(int(total * 1.1) + 16)
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
                await asyncio.to_thread(self.applier.apply_rows, c, sidecar, index, rows, None, True, True)
                done += len(rows)
                since_checkpoint += len(rows)
                c.progress = min(done / max(total, done), 0.999) if total else 0.999
                if since_checkpoint >= self.checkpoint_rows:
                    await _uncancelled(asyncio.to_thread(files.checkpoint_build, c, gen, index, position, last, done))
                    since_checkpoint = 0
            if position < await feed.compacted_through(self.db):
                # Another node compacted the feed past where this build began: the changes since
                # then are gone, so the rows read are not enough. Start over from a fresh scan.
                await asyncio.to_thread(files.forget_build, c.dir)
                return False
            async with c.apply_lock:
                await asyncio.to_thread(sidecar.apply, [], [], position)
                position = await self.applier.apply_range(c, sidecar, index, position, force_until=2**62)
                await asyncio.to_thread(sidecar.stamp_identity)
                old = (c.sidecar, c.gen)
                await asyncio.to_thread(c.swap_in, sidecar, index)
                c.gen, c.position = gen, position
                sidecar = None
                await asyncio.to_thread(files.write_current, c.dir, gen)
                if old[0] is not None:
                    old[0].close()
                    await asyncio.to_thread(files.remove_gen, *c.files(old[1]))
                c.state, c.error, c.progress, c.failures = "ready", None, 1.0, 0
                await asyncio.to_thread(files.forget_build, c.dir)
                c.builds += 1
                c.build_seconds = round(time.monotonic() - started, 3)
                c.dirty += 1
            await self.catch_up_once_ready(c)
            await self.save(c)
            return True
        finally:
            if sidecar is not None:
                sidecar.close()

    async def catch_up_once_ready(self, c: Collection) -> None:
        """Apply what was committed since the open or build last read the feed's head. The change
        consumer skips a collection that is not ready yet, so a write landing between that read and
        the collection turning ready was seen by nobody until some other write came (a write right
        after a rename, while the renamed table's collections rebuild, stayed unsearchable).
        Reading the head again now that it is ready closes the gap. A feed compacted past the
        position is left to the consumer's next apply, which rebuilds."""
        try:
            async with c.apply_lock:
                if c.index is None or c.sidecar is None:
                    return
                if c.position < await feed.compacted_through(self.db):
                    return
                c.position = await self.applier.apply_range(c, c.sidecar, c.index, c.position)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # as in the consumer: the next change retries
            log.exception("applying the change feed to %s failed", c.name)
            c.error = f"{type(exc).__name__}: {exc}"

    def _failed(self, c: Collection, exc: Exception) -> None:
        """State "error", and another attempt later: the database may only be briefly unavailable."""
        c.state, c.error = "error", f"{type(exc).__name__}: {exc}"
        delay = min(60.0, 0.5 * 2**c.failures)
        c.failures += 1
        if not c.closing:
            self.tasks.spawn(self._retry_open(c, delay), c)

    async def _retry_open(self, c: Collection, delay: float) -> None:
        await asyncio.sleep(delay)
        if not c.closing and c.index is None:
            await self.open(c)

    async def rebuild_index(self, c: Collection) -> None:
        """Index only, from the sidecar (too many deleted slots); the old index serves meanwhile."""
        try:
            assert c.sidecar is not None
            started = time.monotonic()
            async with c.apply_lock:
                low = c.position
            index = await asyncio.to_thread(self._index_from_sidecar, c, c.sidecar)
            async with c.apply_lock:
                position = await self.applier.apply_range(c, c.sidecar, index, low, force_until=2**62)
                await asyncio.to_thread(c.swap_in, c.sidecar, index)
                c.position = position
                c.builds += 1
                c.build_seconds = round(time.monotonic() - started, 3)
                c.dirty += 1
            await self.save(c)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("rebuilding vector index %s failed", c.name)
        finally:
            c.rebuilding = False

    async def save(self, c: Collection) -> None:
        async with c.apply_lock:
            if c.index is None:
                return
            _, index_path = c.files(c.gen)
            await asyncio.to_thread(c.index.save, index_path, c.definition.uid, c.position)
            c.dirty = 0
            c.last_save = time.monotonic()


async def _uncancelled(work: Awaitable[None]) -> None:
    """Await `work` to its end even when cancelled (then re-raise): a stop during a checkpoint would
    otherwise return while its thread still rewrites the index under the note of the last one,
    leaving no usable checkpoint for the next start (it then builds from scratch)."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise
