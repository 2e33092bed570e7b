"""Group commit for forwarded writes: writes that queue while a request to the primary is in flight
go to it together, as ONE Hrana batch that is one transaction with a savepoint per write:
BEGIN IMMEDIATE, then the rule of `hrana/batch.py` (`GroupBatch`, shared with the local-first push).

Each write is atomic on its own and a failing one is rolled back alone, with its own error; the
group costs one commit and one fsync on the primary (docs/local-first.md §5 and §9, verified in
docs/local-first-experiments/group_batch.py). A statement that ends the whole transaction
(`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`) or a failing COMMIT leaves nothing of the group
committed: each of its writes is then sent again alone, so only the culprit fails.

One sender thread keeps one request in flight; callers wait on a `concurrent.futures.Future`
(REST awaits it on the loop without holding a thread, Hrana sessions block their worker thread).
Transport failures (primary unreachable, HTTP errors) fail every write of the group with the
client's exception, for the forwarder to map.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

from edgenode.hrana import protocol as p
from edgenode.hrana.backend import HranaError, StmtResult, Value
from edgenode.hrana.batch import GroupBatch, WriteSteps
from edgenode.hrana.client import BatchStepError, HranaClient, replication_index, stmt_result_from_proto

log = logging.getLogger("edgenode.replica")

Args = list[Value] | dict[str, Value]
# Bounds of one group: a write larger than the statement bound still goes, alone.
MAX_WRITES = 128
MAX_STATEMENTS = 1024


@dataclass(slots=True)
class Committed:
    results: list[StmtResult]  # one per statement of the write
    commit_index: int | None  # the COMMIT's replication_index (None when the primary gives none)


@dataclass(slots=True)
class _Write:
    statements: list[tuple[str, Args]]
    want_rows: bool
    future: Future[Committed]


def build_group(writes: list[tuple[list[tuple[str, Args]], bool]]) -> tuple[list[p.BatchStep], list[WriteSteps], int]:
    """The batch for writes given as (statements, want_rows): steps, each write's places, COMMIT's index."""
    batch = GroupBatch()
    batch.add("BEGIN IMMEDIATE")
    places = [batch.write(statements, rows=want_rows) for statements, want_rows in writes]
    commit = batch.commit()
    return batch.steps, places, commit


def _statement_error(result: p.BatchResult, place: WriteSteps) -> BatchStepError | None:
    for number, index in enumerate(place.statements):
        error = result.step_errors[index]
        if error is not None:
            return BatchStepError(error.message, error.code or "UNKNOWN", number)
    return None


def _uncommitted(result: p.BatchResult, place: WriteSteps | None, commit: int) -> BatchStepError:
    """Why a batch did not commit: the lone write's own statement error, else BEGIN's or COMMIT's."""
    error = _statement_error(result, place) if place is not None else None
    if error is not None:
        return error
    for where, index in (("BEGIN", 0), ("COMMIT", commit)):
        failed = result.step_errors[index]
        if failed is not None:
            return BatchStepError(f"{where} failed: {failed.message}", failed.code or "UNKNOWN", None)
    return BatchStepError("the transaction ended without committing", "SQLITE_ABORT", None)


class Combiner:
    def __init__(self, client: HranaClient) -> None:
        self.client = client
        self._queue: deque[_Write] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Counters for status and tests: groups sent and writes they carried.
        self.groups = 0
        self.grouped_writes = 0

    def submit(self, statements: list[tuple[str, Args]], want_rows: bool = False) -> Future[Committed]:
        """Queue one atomic write; its future gives its results, or raises BatchStepError (a statement
        of it failed, `index` within the write; None for the group's BEGIN or COMMIT) or the client's
        HranaError (the primary could not be asked)."""
        future: Future[Committed] = Future()
        with self._cond:
            if self._closed:
                raise HranaError("the node is stopping", "SERVER_SHUTTING_DOWN")
            self._queue.append(_Write(statements, want_rows, future))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="forward-combiner", daemon=True)
                self._thread.start()
            self._cond.notify()
        return future

    def close(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            left, self._queue = list(self._queue), deque()
        for write in left:
            write.future.set_exception(HranaError("the node is stopping", "SERVER_SHUTTING_DOWN"))

    # -- sender thread -----------------------------------------------------------------------------

    def _take(self) -> list[_Write] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            group = [self._queue.popleft()]
            statements = len(group[0].statements)
            while self._queue and len(group) < MAX_WRITES:
                statements += len(self._queue[0].statements)
                if statements > MAX_STATEMENTS:
                    break
                group.append(self._queue.popleft())
            return group

    def _run(self) -> None:
        while (taken := self._take()) is not None:
            # A caller that gave up before its write was sent (a cancelled REST request) drops out;
            # once running, a future can no longer be cancelled under the sender.
            group = [write for write in taken if write.future.set_running_or_notify_cancel()]
            if not group:
                continue
            try:
                self._send(group)
            except BaseException as exc:  # never leave a caller waiting
                for write in group:
                    if not write.future.done():
                        write.future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise

    def _send(self, group: list[_Write]) -> None:
        self.groups += 1
        self.grouped_writes += len(group)
        steps, places, commit = build_group([(write.statements, write.want_rows) for write in group])
        try:
            with self.client.stream() as stream:
                result = stream.batch_raw(steps, close=True)
        except HranaError as exc:
            for write in group:
                write.future.set_exception(exc)
            return
        committed = result.step_results[commit]
        if committed is not None:
            index = replication_index(committed.replication_index)
            for write, place in zip(group, places, strict=True):
                self._answer(write, result, place, index)
            return
        if len(group) > 1 and result.step_errors[0] is None:
            # Nothing of the group committed because one write ended the transaction (or COMMIT
            # failed): send each alone, so the others commit and the culprit gets its own error.
            log.debug("a group of %d writes did not commit; sending them one by one", len(group))
            for write in group:
                self._send([write])
            return
        error = _uncommitted(result, places[0] if len(group) == 1 else None, commit)
        for write in group:
            write.future.set_exception(error)

    @staticmethod
    def _answer(write: _Write, result: p.BatchResult, place: WriteSteps, index: int | None) -> None:
        if result.step_results[place.release] is not None:
            results = [result.step_results[i] for i in place.statements]
            write.future.set_result(Committed([stmt_result_from_proto(r) for r in results if r is not None], index))
            return
        error = _statement_error(result, place)
        if error is None:
            error = BatchStepError("the primary skipped the write without an error", "HRANA_PROTO_ERROR", None)
        write.future.set_exception(error)
