"""A replica's one way to the primary for everything that writes, whichever front-end asked.

REST batches (`ReplicaDatabase.write`) and Hrana sessions (`replica/sessions.py`) both go through
`Forwarder`: one Hrana client, one mapping of "the primary cannot be reached or refused us" to
`PrimaryUnavailable`, one set of write counters, and one read-your-writes wait that returns where
the write became visible here. Values travel in Hrana's encoding, so 64-bit integers stay exact.

Plain writes (REST batches without an Idempotency-Key, Hrana autocommit DML) go through the
`Combiner` (combiner.py): its one sender thread keeps one request in flight, and the writes that
queue meanwhile share the next primary transaction, each in its own savepoint. REST awaits its
write's future on the loop; a Hrana session's worker thread blocks on it. Keyed writes, Hrana
interactive transactions and other statements use the synchronous client directly (REST in a
worker thread, Hrana sessions already are in one). `settle` runs on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import httpx

from edgenode.errors import DatabaseError, PrimaryUnavailable, SQLError
from edgenode.hrana.backend import HranaError, StmtResult, Value
from edgenode.hrana.client import BatchStepError, ClientStream, HranaClient, HranaConnectionError, HranaHTTPError
from edgenode.replica.combiner import Combiner, Committed
from edgenode.replica.files import Position
from edgenode.replica.metrics import ReplicaMetrics
from edgenode.replica.scheduler import Scheduler, SyncFailed
from edgenode.results import NO_POSITION, ExecResult, WritePosition, WriteResult, position_of_index
from edgenode.statements import Prepared

if TYPE_CHECKING:
    from edgenode.idempotency import KeyedWrite

log = logging.getLogger("edgenode.replica")


class Forwarder:
    def __init__(
        self,
        url: str,
        token: str | None,
        timeout: float,
        scheduler: Scheduler,
        metrics: ReplicaMetrics,
        current: Callable[[], Position | None],
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.client = HranaClient(url, token, timeout=timeout)
        self.combiner = Combiner(self.client)
        self.scheduler = scheduler
        self.metrics = metrics
        self._current = current
        self.sent = 0
        self.failed = 0
        self._in_flight = 0
        self._lock = threading.Lock()

    def close(self) -> None:
        self.combiner.close()
        self.client.close()

    @property
    def in_flight(self) -> int:
        """Writes sent and not yet visible here (the watcher leaves their commits to `settle`)."""
        return self._in_flight

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def _outcome(self, outcome: str) -> None:
        """committed, replayed (an Idempotency-Key's recorded outcome), rejected (the primary refused a
        statement, or the key's record refused the request) or unavailable (no answer, or refused us)."""
        with self._lock:
            if outcome == "committed":
                self.sent += 1
            elif outcome == "unavailable":
                self.failed += 1
        self.metrics.writes.labels(outcome).inc()

    def status(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed}

    # -- the one error mapping -------------------------------------------------------------------

    def refusal(self, exc: HranaError) -> DatabaseError | None:
        """What a failure to talk to the primary means here; None for the primary's own statement errors."""
        if isinstance(exc, HranaConnectionError):
            cause = exc.__cause__
            if isinstance(cause, httpx.ConnectError):
                return PrimaryUnavailable(
                    f"the primary at {self.url} is unreachable ({cause}); the write was not applied. "
                    "Reads still work from this node's replica."
                )
            return PrimaryUnavailable(
                f"the primary at {self.url} did not answer within {self.timeout:g} s "
                f"({type(cause).__name__ if cause else exc.message}); the write may or may not have been applied. "
                "Reads still work from this node's replica."
            )
        if isinstance(exc, HranaHTTPError):
            if exc.status in (401, 403):
                return PrimaryUnavailable(
                    f"the primary at {self.url} refused this node's credentials ({exc.status}); check --primary-token"
                )
            return PrimaryUnavailable(f"the primary at {self.url} could not take the request: {exc.message}")
        return None

    def _raise_refusal(self, exc: HranaError) -> None:
        refusal = self.refusal(exc)
        if refusal is not None:
            raise refusal from exc

    # -- read-your-writes (event loop) -----------------------------------------------------------

    async def settle(self, commit: WritePosition | None = None) -> WritePosition:
        """Wait until this replica holds the write, then say where it is.

        `commit` is the write's commit position as the primary reported it (its Hrana
        `replication_index`): the wait ends as soon as a sync reaches it, a sync already past it
        answers at once, and waiting writes share the syncs. Without one (a primary that reports no
        position, or an Idempotency-Key replay), wait for a sync that starts after now instead.
        If that sync fails in time the write is still committed: the position is unknown (None)."""
        try:
            if commit is None:
                await self.scheduler.sync_after()
            else:
                await self.scheduler.sync_until(lambda: self._holds(commit))
        except SyncFailed as exc:
            self.metrics.ryw_timeouts.inc()
            log.warning("write committed on the primary but not yet visible on this node: %s", exc)
            return NO_POSITION
        if commit is not None:
            return commit
        current = self._current()
        return WritePosition(current.generation, current.frame) if current is not None else NO_POSITION

    def _holds(self, commit: WritePosition) -> bool:
        current = self._current()
        return current is not None and (current.generation, current.frame) >= (commit.generation, commit.frame)

    async def write(
        self, statements: list[tuple[str, list[Any]]], prepared: Prepared, keyed: KeyedWrite | None = None
    ) -> WriteResult:
        """A REST batch: forwarded atomically, then visible here before this returns. Without an
        Idempotency-Key it joins the write combiner (combiner.py: concurrent writes share one primary
        transaction, each in its own savepoint); with one, the key is claimed and recorded in a request
        of its own (edgenode.idempotency)."""
        with self._writing():
            try:
                if keyed is None:
                    future = self._submit(statements, want_rows=False)
                    committed = await asyncio.wrap_future(future)
                    results, replayed = self._exec_results(prepared, committed.results), False
                    commit = position_of_index(committed.commit_index)
                else:
                    results, replayed = await asyncio.to_thread(self._write_keyed, statements, prepared, keyed)
                    commit = None
            except BatchStepError as exc:
                self._outcome("rejected")
                where = f"statements[{exc.index}]: " if exc.index is not None else ""
                raise SQLError(f"{where}{exc.message}", index=exc.index) from exc
            except HranaError as exc:
                self._outcome("unavailable")
                self._raise_refusal(exc)
                raise PrimaryUnavailable(f"the primary could not take the write: {exc.message} ({exc.code})") from exc
            except BaseException as exc:
                refused = isinstance(exc, DatabaseError) and exc.status < 500  # by the primary or the key's record
                self._outcome("rejected" if refused else "unavailable")
                raise
            # A replay committed nothing now; read-your-writes still holds for the write it stands for.
            self._outcome("replayed" if replayed else "committed")
            return WriteResult(results, await self.settle(commit), replayed)

    def _submit(self, statements: list[tuple[str, Any]], want_rows: bool) -> Future[Committed]:
        try:
            return self.combiner.submit(statements, want_rows)
        except HranaError as exc:
            raise PrimaryUnavailable(f"the write was not sent: {exc.message}") from exc

    @staticmethod
    def _exec_results(prepared: Prepared, results: list[StmtResult]) -> list[ExecResult]:
        return [
            ExecResult(
                rows_affected=result.affected_row_count if analysis.is_dml else 0,
                last_insert_rowid=result.last_insert_rowid if analysis.is_insert else None,
            )
            for (_, _, analysis), result in zip(prepared, results, strict=True)
        ]

    # -- blocking calls to the primary (worker threads) ------------------------------------------

    def _write_keyed(
        self, statements: list[tuple[str, list[Any]]], prepared: Prepared, keyed: KeyedWrite
    ) -> tuple[list[ExecResult], bool]:
        """ONE request that claims the key, runs the statements and records their outcome."""
        from edgenode.idempotency import run_keyed_hrana

        results, replayed = run_keyed_hrana(self.client, statements, keyed)
        return self._exec_results(prepared, results), replayed

    def execute_once(
        self,
        sql: str,
        args: list[Value] | dict[str, Value],
        want_rows: bool,
        settle: Callable[[WritePosition | None], WritePosition] | None,
        prelude: Sequence[str] = (),
        combine: bool = False,
    ) -> StmtResult:
        """One autocommit statement of a protocol stream on a fresh primary stream (execute + close in
        one round trip: nothing is left open there), after the `prelude` statements (the stream's
        PRAGMA settings). A write then waits for `settle(commit position)` (run on the loop by the
        caller); without `settle` the statement is a read asked of the primary (nothing counted,
        nothing to wait for). With `combine` (a DML statement, no PRAGMA settings) the write joins
        the combiner's next group instead of a stream of its own."""
        if settle is None:
            return self._once(sql, args, want_rows, prelude)
        with self._writing():
            try:
                if combine and not prelude:
                    result = self._combined(sql, args, want_rows)
                else:
                    result = self._once(sql, args, want_rows, prelude)
            except PrimaryUnavailable:
                self._outcome("unavailable")
                raise
            except HranaError:
                self._outcome("rejected")
                raise  # the primary's answer to the statement passes through
            self._outcome("committed")
            settle(position_of_index(result.replication_index))
        return result

    def _combined(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        try:
            committed = self._submit([(sql, args)], want_rows).result()
        except BatchStepError as exc:
            raise HranaError(exc.message, exc.code) from exc  # the primary's answer to the statement
        except HranaError as exc:
            self._raise_refusal(exc)
            raise
        (result,) = committed.results
        result.replication_index = committed.commit_index
        return result

    def _once(
        self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool, prelude: Sequence[str]
    ) -> StmtResult:
        stream = self.client.stream()
        try:
            if prelude:
                stream.sequence("; ".join(prelude))
            return stream.execute(sql, args, want_rows=want_rows, close=True)
        except HranaError as exc:
            try:
                stream.close()
            except HranaError:
                pass  # the primary expires the stream on its own
            self._raise_refusal(exc)
            raise

    def open_stream(self) -> ClientStream:
        """A primary stream for an interactive transaction (its errors go through `refusal`)."""
        return self.client.stream()
