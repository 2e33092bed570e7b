"""Sessions of protocol streams (Hrana) on a replica: reads on the local replica, the rest to the primary.

- Autocommit reads run on the replica's connection (the replica file has one opener).
- Autocommit writes go to the primary through the replica's `Forwarder` (the same one REST writes
  use): plain DML joins the write combiner's next group (one primary transaction for the writes
  queued meanwhile, combiner.py), anything else one request on a fresh primary stream; then
  read-your-writes. In local-first mode they take the REST write path instead
  (`ReplicaDatabase.write`: committed here, queued), except statements returning rows and those of
  a stream that set PRAGMAs. Interactive transactions still run on the primary in both modes
  (docs/local-first.md §7's local lease is not built).
- An interactive transaction pins a primary stream to the node's stream from its BEGIN until the
  primary reports autocommit again (COMMIT, ROLLBACK, an error that ended it) or the node's stream
  closes or expires (closing the primary stream rolls back there). If it wrote, the node syncs
  before answering the statement that ended it.
- A read-only token's sessions are checked locally (the primary token the node holds can write);
  its transactions are opened on the primary as `BEGIN TRANSACTION READONLY` too.
- A primary that cannot be reached fails the statement at once with `PRIMARY_UNAVAILABLE`
  (connection refused is immediate; a hung primary costs the client timeout).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from edgenode import engine
from edgenode.analysis import Analysis
from edgenode.auth import Access
from edgenode.database import Connections
from edgenode.errors import DatabaseError
from edgenode.hrana.backend import DescribeResult, HranaError, Session, StmtResult, Value
from edgenode.hrana.client import ClientStream, HranaConnectionError, HranaHTTPError
from edgenode.hrana.sql import is_begin_readonly, single_statement, split_statements
from edgenode.replica.local_txn import LocalTransaction
from edgenode.results import WritePosition, position_of_index
from edgenode.sessions import (
    analyze,
    bind,
    check_write,
    describe,
    empty_result,
    hrana_error,
    starts_transaction,
    stmt_result,
    stream_pragma_of,
)
from edgenode.stream_pragmas import StreamSettings, reads_stream_pragma
from edgenode.values import to_json

if TYPE_CHECKING:
    from edgenode.replica.database import ReplicaDatabase

log = logging.getLogger(__name__)


class ReplicaConnections(Connections):
    def __init__(self, db: ReplicaDatabase) -> None:
        super().__init__()
        self.db = db
        self.forwarder = db.forwarder

    def open_session(self, access: Access) -> Session:
        return ForwardSession(self, access)

    def primary_error(self, exc: HranaError) -> HranaError:
        """A statement error from the primary passes through; failures to talk to it are the forwarder's."""
        refusal = self.forwarder.refusal(exc)
        return hrana_error(refusal) if refusal is not None else exc

    def settle(self, commit: WritePosition | None = None) -> WritePosition:
        """Read-your-writes, from a session's worker thread (`commit`: the primary's position of it)."""
        return self.bridge.run(self.forwarder.settle(commit))


class ForwardSession(Session):
    def __init__(self, backend: ReplicaConnections, access: Access) -> None:
        self.backend = backend
        self.db = backend.db
        self.can_write = access.can_write
        self._remote: ClientStream | None = None  # the primary stream holding this stream's transaction
        self._read_only_txn = False
        self._wrote = False
        self._closed = False
        self._settings = StreamSettings()  # PRAGMAs this stream set (stream_pragmas.py)
        self._local: LocalTransaction | None = None  # local-first: the transaction this stream runs here

    # -- Session -----------------------------------------------------------------------------------

    def execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        if self._closed:
            raise HranaError("the stream is closed", "STREAM_CLOSED")
        statement = single_statement(sql)
        if self._remote is not None:
            return self._in_transaction(self._remote, statement, args, want_rows)
        if self._local is not None:
            return self._in_local_transaction(self._local, statement, args, want_rows)
        if self.db.lf is not None and (is_begin_readonly(statement) or starts_transaction(statement)):
            # Local-first: the transaction runs on this node and commits as one queued write (local_txn.py).
            read_only = is_begin_readonly(statement) or not self.can_write
            self._local = LocalTransaction.begin(self.db, self.backend.bridge, statement, read_only)
            return empty_result()
        if is_begin_readonly(statement):
            return self._begin(statement, read_only=True)
        if starts_transaction(statement):
            if not self.can_write:
                return self._begin("BEGIN TRANSACTION READONLY", read_only=True)
            return self._begin(statement, read_only=False)
        try:
            analysis = self._analyze(statement)
        except HranaError as exc:
            if not self.can_write or exc.code != "SQLITE_UNKNOWN":
                raise
            # Unknown here ("no such table"): a schema change this replica has not pulled yet, or a
            # plain mistake. The primary knows either way.
            return self._forward_once(statement, args, want_rows)
        setting = stream_pragma_of(analysis)
        if setting is not None:
            check_write(analysis, self.can_write)
            self._settings.set(*setting)
            return empty_result()
        if reads_stream_pragma(statement):
            # The replica's libsql connection hands bare PRAGMAs to the primary anyway; ask on a
            # primary stream that has this stream's settings.
            return self._forward_once(statement, args, want_rows, wrote=False)
        if analysis.is_readonly:
            return self._read_local(statement, args, analysis, want_rows)
        check_write(analysis, self.can_write)
        if self.db.lf is not None and not analysis.columns and not self._settings.statements():
            # Local-first: committed here, queued for the primary (the REST write path, one write id).
            # RETURNING rows and per-stream PRAGMAs are the primary's to answer: those stay forwarded.
            return self._write_local(statement, args)
        # COMMIT and friends outside a transaction land here too: the primary words the error. Plain
        # DML may share a primary transaction with other writes (combiner.py); anything else (DDL,
        # VACUUM, transaction control) goes on a stream of its own.
        combine = analysis.is_dml and not analysis.is_transaction_control
        return self._forward_once(statement, args, want_rows, combine=combine)

    def describe(self, sql: str) -> DescribeResult:
        statement = single_statement(sql)
        if is_begin_readonly(statement):
            return DescribeResult(params=[], cols=[], is_explain=False, is_readonly=True)
        try:
            return describe(self._analyze(statement))
        except HranaError as exc:
            if not self.can_write or exc.code != "SQLITE_UNKNOWN":
                raise
        # A table created in this transaction, or not pulled yet: ask the primary.
        try:
            if self._remote is not None:
                return self._remote.describe(statement)
            stream = self.backend.forwarder.open_stream()
            try:
                return stream.describe(statement)
            finally:
                self._close_quietly(stream)
        except HranaError as exc:
            raise self.backend.primary_error(exc) from exc

    def sequence(self, sql: str) -> None:
        for statement in split_statements(sql):
            self.execute(statement, [], False)

    def is_autocommit(self) -> bool:
        return self._remote is None and self._local is None

    def close(self) -> None:
        self._closed = True
        local, self._local = self._local, None
        if local is not None:
            local.close()  # rolls back: nothing queued
        remote, self._remote = self._remote, None
        if remote is not None:
            # Closing the primary stream rolls back what it holds.
            self._close_quietly(remote)

    # -- helpers -----------------------------------------------------------------------------------

    def _analyze(self, statement: str) -> Analysis:
        analyzer = self.db.analyzer
        if analyzer is None or not self.db.opened:
            raise HranaError(f"the replica is not ready yet ({self.db.scheduler.state})", "SERVER_NOT_READY")
        return analyze(analyzer, statement)

    def _read_local(
        self, statement: str, args: list[Value] | dict[str, Value], analysis: Analysis, want_rows: bool
    ) -> StmtResult:
        analyzer = self.db.analyzer
        assert analyzer is not None  # _analyze checked it
        statement, params = bind(analyzer, analysis, args)
        try:
            outcome, _ = self.backend.bridge.run(
                self.db.call(engine.execute, statement, params, want_rows, analysis.is_dml, analysis.is_insert)
            )
        except DatabaseError as exc:
            raise hrana_error(exc) from exc
        return stmt_result(outcome, analysis.columns)

    def _write_local(self, statement: str, args: list[Value] | dict[str, Value]) -> StmtResult:
        # Database.write takes parameters in their JSON form (blobs as {"base64": ...}), as REST sends them.
        params = {k: to_json(v) for k, v in args.items()} if isinstance(args, dict) else [to_json(v) for v in args]
        try:
            written = self.backend.bridge.run(self.db.write([(statement, params)]))
        except DatabaseError as exc:
            raise hrana_error(exc) from exc
        result = written.results[0]
        return StmtResult([], [], result.rows_affected, result.last_insert_rowid)

    def _forward_once(
        self,
        statement: str,
        args: list[Value] | dict[str, Value],
        want_rows: bool,
        wrote: bool = True,
        combine: bool = False,
    ) -> StmtResult:
        settle = self.backend.settle if wrote else None
        try:
            result = self.backend.forwarder.execute_once(
                statement, args, want_rows, settle, self._settings.statements(), combine
            )
        except DatabaseError as exc:
            raise hrana_error(exc) from exc
        if wrote:
            self._settings.transaction_ended()  # an autocommit write is a whole transaction
        return result

    def _begin(self, statement: str, read_only: bool) -> StmtResult:
        stream = self.backend.forwarder.open_stream()
        try:
            self._give_settings(stream)
            result = stream.execute(statement, [], want_rows=False)
            in_txn = not stream.is_autocommit()
        except HranaError as exc:
            self._close_quietly(stream)
            raise self.backend.primary_error(exc) from exc
        if not in_txn:
            self._close_quietly(stream)
            return result
        self._remote, self._read_only_txn, self._wrote = stream, read_only, False
        return result

    def _in_transaction(
        self, remote: ClientStream, statement: str, args: list[Value] | dict[str, Value], want_rows: bool
    ) -> StmtResult:
        if is_begin_readonly(statement):
            raise HranaError("cannot start a transaction within a transaction", "SQLITE_UNKNOWN")
        if not self.can_write:
            check_write(self._analyze(statement), False)
        elif not self._read_only_txn and not self._wrote:
            try:
                self._wrote = not self._analyze(statement).is_readonly
            except HranaError:
                self._wrote = True  # unknown here (e.g. a table created in this transaction): assume it writes
        result: StmtResult | None = None
        try:
            try:
                result = remote.execute(statement, args, want_rows=want_rows)
                return result
            except (HranaConnectionError, HranaHTTPError) as exc:
                # The primary stream is gone, and the transaction with it (nothing committed: no sync to wait for).
                self._wrote = False
                raise self.backend.primary_error(exc) from exc
        finally:
            self._check_ended(remote, position_of_index(result.replication_index) if result is not None else None)

    def _in_local_transaction(
        self, local: LocalTransaction, statement: str, args: list[Value] | dict[str, Value], want_rows: bool
    ) -> StmtResult:
        if is_begin_readonly(statement) or starts_transaction(statement):
            raise HranaError("cannot start a transaction within a transaction", "SQLITE_UNKNOWN")
        try:
            return local.execute(statement, args, want_rows, self.can_write)
        finally:
            if local.ended:
                self._local = None
                self._settings.transaction_ended()

    def _check_ended(self, remote: ClientStream, commit: WritePosition | None) -> None:
        """`commit`: the position the primary gave the statement that ended the transaction."""
        try:
            ended = remote.closed or remote.is_autocommit()
        except HranaError:
            ended = True
        if not ended:
            return
        self._remote = None
        self._settings.transaction_ended()
        self._close_quietly(remote)
        if self._wrote:
            self._wrote = False
            self.backend.settle(commit)

    def _give_settings(self, stream: ClientStream) -> None:
        """A fresh primary stream gets this stream's PRAGMAs first (the primary keeps them per stream)."""
        statements = self._settings.statements()
        if statements:
            stream.sequence("; ".join(statements))

    @staticmethod
    def _close_quietly(stream: ClientStream) -> None:
        try:
            stream.close()
        except HranaError as exc:
            # The primary expires the stream (rolling back) on its own.
            log.debug("closing a primary stream failed: %s", exc)
