"""Group commit: concurrent autocommit writes of a standalone node share one transaction and one COMMIT.

Every write (a REST batch, a Hrana autocommit statement) costs the writer process a transaction and
a commit, and the commit is what dominates (its WAL append and, under `synchronous=FULL`, an fsync).
Writes that arrive while one commit runs wait in a queue; when it ends, the whole queue goes to the
writer as one call, `engine.run_group`: one `BEGIN IMMEDIATE`, each write inside its own SAVEPOINT
(rolled back alone when it fails, with its own result or error), one COMMIT. A lone write is a group
of one: no timer, no added latency.

Guarantees kept:
- each write is atomic and sees the writes queued before it (they run in arrival order);
- a write is acknowledged (its future resolved) only after the shared COMMIT returned, so after a
  `kill -9` every acknowledged write is in the file; an unacknowledged one may or may not be, as
  with any write whose reply was lost;
- one write's failure is not another's (see `engine.run_group` for the two failures that reach past
  a savepoint and how each is contained);
- the writer is taken under `LocalDatabase._write_lock`, like any other use of it, so a Hrana
  stream's interactive transaction and a group never interleave.

A caller that goes away (a cancelled request) leaves its write in the group if the group already
started: cancelling the group would undo the others' writes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from edgenode import engine
from edgenode.errors import Unavailable
from edgenode.owner import OwnerDied, ProcessOwner

log = logging.getLogger(__name__)

# Bounds one call's message and how long the write lock is held for a single group.
MAX_GROUP = 256


@dataclass(eq=False)
class _Queued:
    member: engine.GroupMember
    is_ddl: bool
    future: asyncio.Future[engine.GroupOutcome]
    deadline: float | None  # monotonic; a write still queued then is refused unrun (WriterBusy)


class WriterBusy(Exception):
    """The write waited its `wait` for the writer (held by a stream's transaction) and did not run."""


@dataclass
class GroupStats:
    commits: int = 0
    writes: int = 0
    largest: int = 0

    def record(self, size: int) -> None:
        self.commits += 1
        self.writes += size
        self.largest = max(self.largest, size)

    def as_dict(self) -> dict[str, Any]:
        return {"commits": self.commits, "writes": self.writes, "largest": self.largest}


class GroupCommitter:
    """Queues autocommit writes for the writer process and commits them in groups (see the module doc).

    `after(ddl)` runs once per group after its COMMIT and before any of its writes is acknowledged:
    the database refreshes its schema mirror (when a write of the group changed the schema) and
    runs its change listeners there, as it does after any single write."""

    def __init__(
        self,
        writer: ProcessOwner,
        write_lock: asyncio.Lock,
        after: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._writer = writer
        self._write_lock = write_lock
        self._after = after
        self._queue: list[_Queued] = []
        self._task: asyncio.Task[None] | None = None
        self.stats = GroupStats()

    async def commit(self, member: engine.GroupMember, is_ddl: bool, wait: float | None = None) -> engine.GroupOutcome:
        """Run one write in the next group; (True, result) or (False, its error) once committed.
        `wait`: seconds it may wait for its group to start, else (False, WriterBusy) and it never runs."""
        deadline = time.monotonic() + wait if wait is not None else None
        queued = _Queued(member, is_ddl, asyncio.get_running_loop().create_future(), deadline)
        self._queue.append(queued)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="edgenode-group-commit")
        return await queued.future

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        queued, self._queue = self._queue, []
        for q in queued:
            if not q.future.done():
                q.future.set_result((False, Unavailable("the node is stopping; the write was not committed")))

    async def _run(self) -> None:
        try:
            while self._queue:
                await self._commit_next()
        finally:
            # No await between the loop's last check and this: a write queued meanwhile found the
            # task still set and will be picked up, or finds None and starts a new one.
            if self._task is asyncio.current_task():
                self._task = None

    async def _commit_next(self) -> None:
        group: list[_Queued] = []
        outcomes: list[engine.GroupOutcome] | None = None
        try:
            async with self._write_lock:
                # Taken under the lock: writes that queued while it was held (by the previous group
                # or a Hrana transaction) join this group.
                group = [q for q in self._queue[:MAX_GROUP] if not q.future.cancelled()]
                del self._queue[:MAX_GROUP]
                now = time.monotonic()
                for q in group:
                    if q.deadline is not None and now > q.deadline:
                        q.future.set_result((False, WriterBusy()))
                group = [q for q in group if not q.future.done()]
                if not group:
                    return
                try:
                    outcomes = await self._writer.call(engine.run_group, [q.member for q in group])
                except OwnerDied as exc:
                    log.warning("the writer process died during a group commit of %d write(s): %s", len(group), exc)
                    await self._writer.restart()
                    failure = Unavailable("the writer process died; the transaction was not committed, retry it")
                    outcomes = [(False, failure)] * len(group)
                except Exception as exc:  # the group as a whole failed (nothing committed)
                    log.exception("a group commit of %d write(s) failed", len(group))
                    outcomes = [(False, exc)] * len(group)
            self.stats.record(len(group))
            await self._after(any(q.is_ddl and ok for q, (ok, _) in zip(group, outcomes, strict=True)))
        finally:
            # Also when stopped (cancelled) mid-group: a cancelled writer call killed the writer,
            # so nothing of the group was committed; never leave a caller waiting.
            stopped = (False, Unavailable("the node stopped; the write was not committed, retry it"))
            for i, q in enumerate(group):
                if not q.future.done():
                    q.future.set_result(outcomes[i] if outcomes is not None else stopped)
