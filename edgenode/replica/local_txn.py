"""A Hrana interactive transaction on a local-first node (docs/local-first.md §7).

It runs on the node, not on the primary, so it works while the primary is away:

- BEGIN takes the lease of the replica connection (replica/lease.py; waits at most
  `transaction_timeout` for another transaction) and opens the transaction there. Until it ends,
  every other request of the node waits for the connection.
- Its statements run on that connection: reads see the node's view (the pulled state, the pending
  writes, and this transaction's own writes). Each write statement that succeeds is kept with its
  exact parameters; a failing statement is undone by SQLite alone and not kept.
- COMMIT queues the kept writes as ONE outbox entry (one write id, durable: the acknowledgement),
  then commits the replica. The pusher replays them on the primary as one write, in one savepoint:
  all of them apply, or the whole transaction becomes one conflict. Only the writes are re-run:
  what the transaction read is not re-checked on the primary, so it is serializable on this node,
  not across nodes (put the condition in the write: `UPDATE … WHERE version = ?`).
- ROLLBACK, a closed or expired stream, or `transaction_timeout` seconds without COMMIT roll it
  back and queue nothing.

SAVEPOINT / RELEASE / ROLLBACK TO inside it are refused (the queued entry could not express them).
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from edgenode import engine
from edgenode.errors import DatabaseError
from edgenode.hrana.backend import HranaError, StmtResult, Value
from edgenode.idempotency import fingerprint
from edgenode.replica import connection
from edgenode.replica.lease import LeaseBusy
from edgenode.replica.outbox import write_id
from edgenode.results import ExecResult, PlainStatement
from edgenode.sessions import analyze, check_write, hrana_error, stmt_result
from edgenode.statements import bind_params, bind_statement
from edgenode.values import to_json

if TYPE_CHECKING:
    from edgenode.analysis import StatementAnalyzer
    from edgenode.replica.database import ReplicaDatabase
    from edgenode.sessions import LoopBridge

_COMMIT = re.compile(r"^\s*(COMMIT|END)(\s+TRANSACTION)?\s*;?\s*$", re.IGNORECASE)
_ROLLBACK = re.compile(r"^\s*ROLLBACK(\s+TRANSACTION)?\s*;?\s*$", re.IGNORECASE)


class LocalTransaction:
    """One open local transaction of a session (created by `begin`, ended by COMMIT/ROLLBACK/close)."""

    def __init__(self, db: ReplicaDatabase, bridge: LoopBridge, read_only: bool) -> None:
        self.db = db
        self.bridge = bridge
        self.read_only = read_only
        self.writes: list[tuple[tuple[str, list[Any]], PlainStatement, ExecResult]] = []
        self.ended = False
        self.expired = False
        self.ddl = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._analyzer: StatementAnalyzer | None = None
        self.write_id: str | None = None

    @classmethod
    def begin(cls, db: ReplicaDatabase, bridge: LoopBridge, statement: str, read_only: bool) -> LocalTransaction:
        txn = cls(db, bridge, read_only)
        bridge.run(txn._begin("BEGIN" if read_only else statement))
        return txn

    async def _begin(self, statement: str) -> None:
        timeout = self.db.settings.transaction_timeout
        try:
            await self.db.lease.acquire(self, timeout)
        except LeaseBusy as exc:
            raise HranaError(f"{exc}; retry the transaction", "SQLITE_BUSY") from None
        try:
            await self.db.call(connection.txn_begin, statement, lease=self)
        except BaseException:
            self.db.lease.release(self)
            raise
        self._watchdog = asyncio.get_running_loop().call_later(timeout, self._expire)

    def _expire(self) -> None:
        if not self.ended:
            self.expired = True
            asyncio.get_running_loop().create_task(self._end(None))

    # -- statements ------------------------------------------------------------------------------

    def execute(
        self, statement: str, args: list[Value] | dict[str, Value], want_rows: bool, can_write: bool
    ) -> StmtResult:
        if self.expired:
            raise self._expired_error()
        if _COMMIT.match(statement):
            entry = self._entry()
            if entry is not None and self.db.lf is not None:
                try:
                    self.bridge.run(self.db.lf.check_size(entry[1], entry[0]))
                except DatabaseError as exc:
                    self.bridge.run(self._end(None))  # it could never be pushed: rolled back, nothing queued
                    raise hrana_error(exc) from exc
            if not self.bridge.run(self._end(entry)):
                raise self._expired_error()  # the watchdog rolled it back first
            return StmtResult([], [], 0, None)
        if _ROLLBACK.match(statement):
            self.bridge.run(self._end(None))
            return StmtResult([], [], 0, None)
        analyzer = self._analyzer or self.db.analyzer
        if analyzer is None:
            raise HranaError("the replica is not open", "SERVER_NOT_READY")
        analysis = analyze(analyzer, statement)
        if analysis.is_transaction_control:
            raise HranaError(
                "SAVEPOINT, RELEASE and ROLLBACK TO are not supported in a local-first transaction; "
                "COMMIT or ROLLBACK it",
                "SQLITE_UNKNOWN",
            )
        writes = not analysis.is_readonly
        if writes:
            check_write(analysis, can_write, read_only_txn=self.read_only)
        params = {k: to_json(v) for k, v in args.items()} if isinstance(args, dict) else [to_json(v) for v in args]
        try:
            exact = bind_params(analysis, params, "statement")
            sql, bound = bind_statement(analyzer, analysis, params, "statement")
        except DatabaseError as exc:
            raise hrana_error(exc) from exc
        outcome, in_txn = self.bridge.run(
            self.db.call(connection.txn_execute, sql, bound, want_rows, analysis.is_dml, analysis.is_insert, lease=self)
        )
        if not in_txn:
            # The statement ended the transaction itself (RAISE(ROLLBACK), INSERT OR ROLLBACK): nothing kept.
            self.bridge.run(self._end(None))
        result = stmt_result(outcome, analysis.columns)  # raises the statement's error
        if writes and in_txn:
            if analysis.is_ddl:
                # Later statements of this transaction may use what it created (as a REST batch does).
                self._analyzer = self._analyzer or analyzer.fork()
                self._analyzer.apply_ddl(sql)
                self.ddl = True
            local = (sql, bound, analysis.is_dml, analysis.is_insert)
            self.writes.append(
                ((statement, exact), local, ExecResult(result.affected_row_count, result.last_insert_rowid))
            )
        return result

    def _expired_error(self) -> HranaError:
        return HranaError(
            f"the transaction was rolled back: it held the node's connection longer than "
            f"{self.db.settings.transaction_timeout:g} s (transaction_timeout)",
            "TRANSACTION_TIMEOUT",
        )

    def close(self) -> None:
        if not self.ended:
            self.bridge.run(self._end(None))

    # -- the end ---------------------------------------------------------------------------------

    def _entry(self) -> tuple[str, list[tuple[str, Any]], list[PlainStatement], list[ExecResult]] | None:
        if not self.writes:
            return None
        statements = [w[0] for w in self.writes]
        return fingerprint(statements), statements, [w[1] for w in self.writes], [w[2] for w in self.writes]

    async def _end(self, entry: Any) -> bool:
        """End it (COMMIT with `entry`, else ROLLBACK); False if it had ended already."""
        if self.ended:
            return False
        self.ended = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        lf = self.db.lf
        assert lf is not None
        try:
            seq = await self.db.call(connection.txn_end, entry, lf.retention, self.db.database_id, lease=self)
        finally:
            self.db.lease.release(self)
        if seq is not None:
            self.write_id = write_id(lf.node_id or "", seq)
            lf.metrics.writes.labels("queued").inc()
            lf.wake()
            if self.ddl:
                await self.db._set_schema(await self.db.call(engine.read_schema))
            await self.db.notify_changed()
        return True
