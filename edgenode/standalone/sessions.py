"""Sessions of protocol streams (Hrana) over `LocalDatabase`'s connection-owner processes.

- Autocommit statements: reads on a reader from the node's one pool (`edgenode.standalone.readers`,
  shared with REST: on the event loop when one is idle, else straight from the worker thread),
  writes through the group commit, each statement its own transaction.
- An interactive transaction (`BEGIN ...`, `SAVEPOINT`, or a batch that starts with one) pins a
  leased connection to the stream until COMMIT/ROLLBACK, an error that ends it, or the stream's
  close or expiry (the server's `transaction_timeout` bounds how long it holds the write lock).
  Write-capable transactions lease the writer; `BEGIN TRANSACTION READONLY`, and any transaction
  of a read-only token, lease a reader (opened with `query_only`) and run `BEGIN DEFERRED` there.
- Statements are classified by the node's analyzer first (in the worker thread, cached): read-only
  enforcement, declared types, parameter names. DDL inside a transaction extends a private copy
  of the analyzer's schema so later statements of the same transaction compile against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from edgenode import commit_marks, engine
from edgenode.analysis import Analysis, StatementAnalyzer
from edgenode.auth import Access
from edgenode.database import Connections
from edgenode.errors import SQLError
from edgenode.hrana.backend import DescribeResult, HranaError, Session, StmtResult, Value
from edgenode.hrana.sql import is_begin_readonly, single_statement, split_statements
from edgenode.owner import OwnerDied, ProcessOwner
from edgenode.results import StatementOutcome
from edgenode.sessions import (
    analyze,
    bind,
    check_write,
    describe,
    empty_result,
    starts_transaction,
    stmt_result,
    stream_pragma_of,
)
from edgenode.standalone.commits import WriterBusy
from edgenode.standalone.readers import ReadersBusy, ReaderStopped
from edgenode.stream_pragmas import StreamSettings

if TYPE_CHECKING:
    from edgenode.standalone.database import LocalDatabase

log = logging.getLogger(__name__)
T = TypeVar("T")
Outcome = tuple[StatementOutcome | SQLError, bool]


@dataclass(eq=False)
class _Pin:
    """A connection leased to one stream (`lease` is the entered context manager that gives it back)."""

    lease: contextlib.AbstractAsyncContextManager[ProcessOwner]
    owner: ProcessOwner
    writer: bool
    feed_before: int | None = None  # the change feed's seq at BEGIN (edgenode.commit_marks)


class LocalConnections(Connections):
    def __init__(self, db: LocalDatabase, *, lease_timeout: float) -> None:
        super().__init__()
        self.db = db
        # How long a statement waits for the writer (or a reader) held by other streams' transactions:
        # a little over the transaction timeout, after which the holder has been rolled back.
        self.lease_timeout = lease_timeout

    def open_session(self, access: Access) -> Session:
        return LocalSession(self, access)


class LocalSession(Session):
    def __init__(self, backend: LocalConnections, access: Access) -> None:
        self.backend = backend
        self.db = backend.db
        self.can_write = access.can_write
        self._pin: _Pin | None = None
        self._fork: StatementAnalyzer | None = None  # schema mirror with this transaction's DDL
        self._ddl = False
        self._closed = False
        self._settings = StreamSettings()  # PRAGMAs this stream set (stream_pragmas.py)

    # -- Session (worker threads) ------------------------------------------------------------------

    def execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        if self._closed:
            raise HranaError("the stream is closed", "STREAM_CLOSED")
        statement = single_statement(sql)
        pin = self._pin
        if pin is None:
            if is_begin_readonly(statement):
                return self._run(self._begin(False, "BEGIN DEFERRED"))
            analysis = self._analyze(statement)
            if analysis.is_transaction_control and starts_transaction(statement):
                if self.can_write:
                    return self._run(self._begin(True, statement))
                # A read-only token's transaction: on a reader, where BEGIN IMMEDIATE would fail.
                begin = statement if statement.lstrip()[:9].upper() == "SAVEPOINT" else "BEGIN DEFERRED"
                return self._run(self._begin(False, begin))
            setting = stream_pragma_of(analysis)
            if setting is not None:
                check_write(analysis, self.can_write)
                self._settings.set(*setting)
                return empty_result()
            statement, params = self._bind(analysis, args)
            if analysis.is_readonly or analysis.is_transaction_control:
                # COMMIT and friends outside a transaction land here too: the engine words the error.
                return self._read_once(statement, params, analysis, want_rows)
            check_write(analysis, self.can_write)
            return self._run(self._write_once(statement, params, analysis, want_rows))
        if is_begin_readonly(statement):
            raise HranaError("cannot start a transaction within a transaction", "SQLITE_UNKNOWN")
        analysis = self._analyze(statement)
        check_write(analysis, self.can_write, read_only_txn=not pin.writer)
        bound_sql, params = self._bind(analysis, args)
        return self._run(self._in_transaction(pin, bound_sql, params, analysis, want_rows))

    def describe(self, sql: str) -> DescribeResult:
        statement = single_statement(sql)
        if is_begin_readonly(statement):
            return DescribeResult(params=[], cols=[], is_explain=False, is_readonly=True)
        return describe(self._analyze(statement))

    def sequence(self, sql: str) -> None:
        for statement in split_statements(sql):
            self.execute(statement, [], False)

    def is_autocommit(self) -> bool:
        return self._pin is None

    async def try_execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult | None:
        """Autocommit statements on the event loop (no worker-thread hop): reads on a reader idle now,
        writes through the group commit. Transactions, stream PRAGMAs, a statement needing a schema
        refresh, or no idle reader: None (`execute` runs it in a worker thread)."""
        if self._closed or self._pin is not None:
            return None
        analyzer = self.db.analyzer
        if analyzer is None:
            return None
        statement = single_statement(sql)
        if is_begin_readonly(statement):
            return None
        try:
            analysis = analyze(analyzer, statement)
        except HranaError:
            return None  # `execute` refreshes the mirror if it may trail the file, and words the error
        if analysis.is_transaction_control or stream_pragma_of(analysis) is not None:
            return None
        statement, params = bind(analyzer, analysis, args)
        if not analysis.is_readonly:
            # An autocommit write awaits its group commit here, as `execute` would through the bridge.
            check_write(analysis, self.can_write)
            return await self._write_once(statement, params, analysis, want_rows)
        try:
            answer = await self.db.readers.try_call(
                self.db.timeout_ms / 1000,
                engine.execute,
                statement,
                params,
                want_rows,
                analysis.is_dml,
                analysis.is_insert,
                self._settings.items(),
            )
        except OwnerDied as exc:
            raise self._died(exc) from exc
        if answer is None:
            return None
        outcome, _ = answer
        return stmt_result(outcome, analysis.columns)

    def try_close(self) -> bool:
        if self._pin is not None:
            return False
        self._closed = True
        return True

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pin is None:
            return
        try:
            self._run(self._abort())
        except Exception:
            log.exception("hrana: rolling back a closed stream's transaction failed")

    # -- helpers -----------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.backend.bridge.run(coro)

    def _bind(self, analysis: Analysis, args: list[Value] | dict[str, Value]) -> tuple[str, list[Any]]:
        analyzer = self._fork or self.db.analyzer
        if analyzer is None:
            raise HranaError("the database is not open yet", "SERVER_NOT_READY")
        return bind(analyzer, analysis, args)

    def _analyze(self, statement: str) -> Analysis:
        analyzer = self._fork or self.db.analyzer
        if analyzer is None:
            raise HranaError("the database is not open yet", "SERVER_NOT_READY")
        try:
            return analyze(analyzer, statement)
        except HranaError as exc:
            # "no such table": the mirror may trail a schema change made through another connection.
            if (
                self._fork is not None
                or exc.code != "SQLITE_UNKNOWN"
                or not self._run(self.db.refresh_schema_if_changed())
            ):
                raise
        return analyze(self.db.analyzer or analyzer, statement)

    # -- on the event loop -------------------------------------------------------------------------

    async def _acquire(self, writer: bool) -> _Pin:
        lease = self.db.lease_writer() if writer else self.db.lease_reader()
        try:
            owner = await asyncio.wait_for(lease.__aenter__(), self.backend.lease_timeout)
        except TimeoutError:
            what = "the writer" if writer else "a reader connection"
            raise HranaError(
                f"database is locked: waited {self.backend.lease_timeout:g} s for {what}, "
                "held by other streams' transactions",
                "SQLITE_BUSY",
            ) from None
        return _Pin(lease, owner, writer)

    async def _release(self, pin: _Pin, failure: BaseException | None = None) -> None:
        broken = isinstance(failure, OwnerDied | asyncio.CancelledError)
        try:
            if broken and pin.writer:
                # Its process is gone mid-statement: whatever was open rolled back with it.
                await pin.owner.restart()
            if broken and not pin.writer:
                # The pool kills and replaces a reader that comes back with OwnerDied.
                died = failure if isinstance(failure, OwnerDied) else OwnerDied("cancelled")
                await pin.lease.__aexit__(type(died), died, None)
            else:
                await pin.lease.__aexit__(None, None, None)
        except Exception:
            log.exception("hrana: giving back a leased connection failed")

    async def _call(
        self, pin: _Pin, sql: str, params: list[Any], analysis: Analysis | None, want_rows: bool
    ) -> Outcome:
        is_dml = analysis.is_dml if analysis else False
        is_insert = analysis.is_insert if analysis else False
        call = pin.owner.call(engine.execute, sql, params, want_rows, is_dml, is_insert, self._settings.items())
        if pin.writer:
            return await call
        timeout = self.db.timeout_ms / 1000
        try:
            return await asyncio.wait_for(call, timeout)
        except TimeoutError:
            # The binding cannot interrupt a statement: its process was stopped (see ProcessOwner.call).
            raise ReaderStopped(f"interrupted: query ran longer than query_timeout_ms={self.db.timeout_ms}") from None

    @staticmethod
    def _died(exc: OwnerDied) -> HranaError:
        if isinstance(exc, ReaderStopped):
            return HranaError(str(exc), "SQLITE_INTERRUPT")
        return HranaError(f"the connection's process died ({exc}); anything uncommitted was lost", "SQLITE_IOERR")

    async def _once(self, writer: bool, sql: str, params: list[Any], analysis: Analysis, want_rows: bool) -> Outcome:
        pin = await self._acquire(writer)
        failure: BaseException | None = None
        try:
            outcome, in_txn = await self._call(pin, sql, params, analysis, want_rows)
            if in_txn:
                # Not expected of an autocommit statement; never hand a connection back mid-transaction.
                await pin.owner.call(engine.rollback)
            return outcome, False
        except OwnerDied as exc:
            failure = exc
            raise self._died(exc) from exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            await self._release(pin, failure)

    def _read_once(self, sql: str, params: list[Any], analysis: Analysis, want_rows: bool) -> StmtResult:
        try:
            outcome, _ = self.db.readers.call_blocking(
                self.backend.lease_timeout,
                self.db.timeout_ms / 1000,
                engine.execute,
                sql,
                params,
                want_rows,
                analysis.is_dml,
                analysis.is_insert,
                self._settings.items(),
            )
        except ReadersBusy as exc:
            raise HranaError(str(exc), "SQLITE_BUSY") from None
        except OwnerDied as exc:
            raise self._died(exc) from exc
        return stmt_result(outcome, analysis.columns)

    async def _write_once(self, sql: str, params: list[Any], analysis: Analysis, want_rows: bool) -> StmtResult:
        if (analysis.is_dml or analysis.is_ddl) and not self._settings.items():
            # Shares a transaction and a COMMIT with concurrent writes (edgenode.standalone.commits).
            # Not so with stream PRAGMAs (foreign_keys is a no-op inside a transaction), nor for
            # statements that cannot run in one (VACUUM) or that are neither DML nor DDL.
            ok, value = await self.db.commit_statement(
                sql, params, want_rows, analysis.is_dml, analysis.is_insert, analysis.is_ddl, self.backend.lease_timeout
            )
            self._settings.transaction_ended()
            if isinstance(value, WriterBusy):
                raise HranaError(
                    f"database is locked: waited {self.backend.lease_timeout:g} s for the writer, "
                    "held by other streams' transactions",
                    "SQLITE_BUSY",
                )
            if not ok and not isinstance(value, SQLError):
                raise HranaError(f"the write was not committed ({value}); retry it", "SQLITE_IOERR")
            return stmt_result(value, analysis.columns)
        outcome, _ = await self._once(True, sql, params, analysis, want_rows)
        self._settings.transaction_ended()  # an autocommit write is a whole transaction
        if analysis.is_ddl and not isinstance(outcome, SQLError):
            await self.db.refresh_schema()
        return stmt_result(outcome, analysis.columns)

    async def _begin(self, writer: bool, sql: str) -> StmtResult:
        pin = await self._acquire(writer)
        try:
            if writer:
                # Where this transaction's commit marker starts counting (`_in_transaction`).
                outcome, in_txn, pin.feed_before = await pin.owner.call(engine.begin_unit, sql, self._settings.items())
            else:
                outcome, in_txn = await self._call(pin, sql, [], None, False)
        except OwnerDied as exc:
            await self._release(pin, exc)
            raise self._died(exc) from exc
        except BaseException as exc:
            await self._release(pin, exc)
            raise
        if isinstance(outcome, SQLError) or not in_txn:
            await self._release(pin)
            return stmt_result(outcome)
        self._pin = pin
        return empty_result()

    async def _in_transaction(
        self, pin: _Pin, sql: str, params: list[Any], analysis: Analysis, want_rows: bool
    ) -> StmtResult:
        try:
            if pin.feed_before is not None and analysis.is_transaction_control and commit_marks.ends_unit(sql):
                # The unit's commit marker goes in before its COMMIT or RELEASE (edgenode.commit_marks).
                outcome, in_txn, pin.feed_before = await pin.owner.call(
                    engine.end_unit, pin.feed_before, sql, params, self._settings.items()
                )
            else:
                outcome, in_txn = await self._call(pin, sql, params, analysis, want_rows)
        except OwnerDied as exc:
            await self._finish(exc)
            raise self._died(exc) from exc
        except BaseException as exc:
            await self._finish(exc)
            raise
        if analysis.is_ddl and not isinstance(outcome, SQLError):
            self._ddl = True
            if in_txn:
                if self._fork is None:
                    base = self.db.analyzer
                    assert base is not None
                    self._fork = await asyncio.to_thread(base.fork)
                self._fork.apply_ddl(sql)
        if not in_txn:
            await self._finish()
        return stmt_result(outcome, analysis.columns)

    async def _finish(self, failure: BaseException | None = None) -> None:
        """The transaction is over (or lost): give the connection back and forget its schema copy."""
        pin, self._pin = self._pin, None
        ddl, self._ddl, self._fork = self._ddl, False, None
        self._settings.transaction_ended()
        if pin is not None:
            await self._release(pin, failure)
        if ddl:
            await self.db.refresh_schema()

    async def _abort(self) -> None:
        pin = self._pin
        if pin is None:
            return
        try:
            clean = await pin.owner.call(engine.rollback)
        except OwnerDied as exc:
            await self._finish(exc)
            return
        if not clean:
            log.warning("hrana: a stream's connection stayed in a transaction after ROLLBACK; restarting it")
            await self._finish(OwnerDied("left in a transaction"))
            return
        await self._finish()
