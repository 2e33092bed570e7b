"""The primary's Hrana backend: one apsw connection per stream over the primary database.

Each session holds the store's shared lock while a statement runs and for as long as its
connection is inside a transaction, so a rollover or push (exclusive) never checkpoints or
appends under an open transaction; the Hrana server's transaction timeout bounds that wait.
An authorizer refuses what would break the generation invariant (checkpoints, journal mode,
autocheckpoint) and ATTACH; read-only sessions also run with `query_only`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import apsw
import apsw.ext

from edgenode import commit_marks
from edgenode.auth import Access
from edgenode.hrana.backend import Backend, Col, DescribeResult, HranaError, Session, StmtResult, Value
from edgenode.hrana.sql import hrana_error_from_sqlite, is_begin_readonly, single_statement, strip_named_arg_prefixes
from edgenode.primary.generations import LOCK_TIMEOUT, PrimaryStore
from edgenode.results import replication_index
from edgenode.rwlock import LockTimeout

CHANGES_TABLE = commit_marks.CHANGES_TABLE

# Setting these would checkpoint behind the generation's back, stop WAL frame N being sync frame N,
# weaken the durability of acknowledged commits, lift read-only access or allow corrupting the schema.
_GUARDED_PRAGMAS = {
    "wal_checkpoint",
    "wal_autocheckpoint",
    "journal_mode",
    "locking_mode",
    "page_size",
    "query_only",
    "synchronous",
    "writable_schema",
}
_INSERT = re.compile(r"^\s*(?:INSERT|REPLACE)\b", re.IGNORECASE)
_WITH_INSERT = re.compile(r"^\s*WITH\b.*\b(?:INSERT|REPLACE)\s+(?:OR\s+\w+\s+)?INTO\b", re.IGNORECASE | re.DOTALL)


def _is_insert(sql: str) -> bool:
    return bool(_INSERT.match(sql) or _WITH_INSERT.match(sql))


def _with_prefix(sql: str, name: str | None) -> str | None:
    """apsw reports parameter names without their `:`/`@`/`$`; Hrana's describe carries them."""
    if not name:
        return None
    match = re.search(r"([:@$])" + re.escape(name) + r"(?![\w$])", sql)
    return (match.group(1) if match else ":") + name


class PrimarySession(Session):
    def __init__(self, store: PrimaryStore, access: Access) -> None:
        self.store = store
        self.read_only = not access.can_write
        # Opening reads the database (journal mode, schema): keep it out of a rollover's or push's way.
        try:
            with store.lock.shared(LOCK_TIMEOUT):
                self.conn: apsw.Connection | None = store.connect(on_commit=self._committed)
        except LockTimeout as exc:
            raise HranaError(str(exc), "SQLITE_BUSY") from exc
        self._commit_frame: int | None = None  # set by this connection's last commit
        self._internal = False
        self._readonly_txn = False
        self._holds_lock = False
        # The first change-feed row this connection's current unit inserted (edgenode.commit_marks):
        # a unit's COMMIT or RELEASE appends its commit marker first, so replicas see boundaries.
        self._feed_first: int | None = None
        self.conn.authorizer = self._authorize
        self.conn.set_update_hook(self._row_changed)
        if self.read_only:
            self._set_query_only(True)

    def _authorize(self, op: int, p1: str | None, p2: str | None, dbname: str | None, trigger: str | None) -> int:
        if self._internal:
            return apsw.SQLITE_OK
        # Attaching files would let a token holder write anywhere the process can (VACUUM INTO too);
        # plain VACUUM attaches an unnamed temporary database, which is harmless.
        if op == apsw.SQLITE_ATTACH and p1:
            return apsw.SQLITE_DENY
        if op == apsw.SQLITE_PRAGMA and p1 and p1.lower() in _GUARDED_PRAGMAS:
            if p1.lower() == "wal_checkpoint" or p2 is not None:
                return apsw.SQLITE_DENY
        return apsw.SQLITE_OK

    def _row_changed(self, op: int, dbname: str, table: str, rowid: int) -> None:
        if self._feed_first is None and op == apsw.SQLITE_INSERT and table == CHANGES_TABLE and dbname == "main":
            self._feed_first = rowid

    def _mark(self, conn: apsw.Connection, statement: str) -> bool:
        """Before a statement that ends a unit: its commit marker, if it captured changes."""
        first = self._feed_first
        if first is None or not conn.in_transaction or not commit_marks.ends_unit(statement):
            return False
        self._internal = True
        try:
            commit_marks.mark(conn, first - 1)
            return True
        except apsw.Error:
            return False  # a marker is an addition: the statement runs and words any error itself
        finally:
            self._internal = False
            self._feed_first = None  # the marker's own row is not the next unit's first change

    def _unit_after(self, conn: apsw.Connection, first: int | None, marked: bool, ok: bool) -> None:
        if not conn.in_transaction:
            self._feed_first = None
        elif not ok:
            # A failed statement left nothing (a COMMIT or RELEASE that failed: the unit goes on,
            # without the marker).
            if marked and first is not None:
                self._internal = True
                try:
                    commit_marks.unmark(conn, first - 1)
                finally:
                    self._internal = False
            self._feed_first = first

    def _committed(self, frame: int) -> None:
        self._commit_frame = frame

    def _replication_index(self, conn: apsw.Connection) -> int | None:
        """Where this statement left the database, as Hrana's `replication_index`: the frame of the
        commit it made (an autocommit write, or the COMMIT of a transaction), else the newest commit
        this process knows, which covers everything visible to it. None inside a transaction: nothing
        of it is committed yet. The caller holds the store's shared lock (no rollover in between)."""
        if conn.in_transaction:
            return None
        frame = self._commit_frame if self._commit_frame is not None else self.store.last_commit_frame()
        return replication_index(self.store.generation, frame)

    def _set_query_only(self, on: bool) -> None:
        assert self.conn is not None
        self._internal = True
        try:
            self.conn.execute(f"PRAGMA query_only={1 if on else 0}")
        finally:
            self._internal = False

    # -- locking -----------------------------------------------------------------------------

    def _enter(self) -> apsw.Connection:
        if self.conn is None:
            raise HranaError("the stream is closed", "STREAM_CLOSED")
        if not self._holds_lock:
            try:
                self.store.lock.acquire_shared(LOCK_TIMEOUT)
            except LockTimeout as exc:
                raise HranaError(str(exc), "SQLITE_BUSY") from exc
            self._holds_lock = True
        return self.conn

    def _leave(self) -> None:
        conn = self.conn
        if conn is not None and not conn.in_transaction:
            if self._readonly_txn:
                self._readonly_txn = False
                if not self.read_only:
                    self._set_query_only(False)
            if self._holds_lock:
                self._holds_lock = False
                self.store.lock.release_shared()

    # -- Session -----------------------------------------------------------------------------

    def execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        statement = single_statement(sql)
        conn = self._enter()
        started = time.perf_counter()
        try:
            if is_begin_readonly(statement):
                if conn.in_transaction:
                    raise HranaError("cannot start a transaction within a transaction", "SQLITE_UNKNOWN")
                conn.execute("BEGIN DEFERRED")
                self._readonly_txn = True
                self._set_query_only(True)
                return StmtResult([], [], 0, None)
            bindings: Any = strip_named_arg_prefixes(args) if isinstance(args, dict) else args
            first = self._feed_first
            marked = self._mark(conn, statement)
            ok = False
            cursor = conn.cursor()
            description: list[tuple[str, str | None]] = []

            def trace(cur: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
                description[:] = cur.get_description()
                return True

            cursor.exec_trace = trace
            before = conn.total_changes()
            rows: list[list[Value]] = []
            read = 0
            self._commit_frame = None
            try:
                for row in cursor.execute(statement, bindings):
                    read += 1
                    if want_rows:
                        rows.append(list(row))
                ok = True
            finally:
                self._unit_after(conn, first, marked, ok)
            changed = conn.total_changes() != before
            affected = conn.changes() if changed else 0
            rowid = conn.last_insert_rowid() if changed and _is_insert(statement) else None
            return StmtResult(
                cols=[Col(name, decltype) for name, decltype in description],
                rows=rows,
                affected_row_count=affected,
                last_insert_rowid=rowid,
                rows_read=read,
                rows_written=affected,
                query_duration_ms=(time.perf_counter() - started) * 1000,
                replication_index=self._replication_index(conn),
            )
        except HranaError:
            raise
        except apsw.Error as exc:
            raise hrana_error_from_sqlite(exc) from exc
        except (TypeError, OverflowError) as exc:
            raise HranaError(str(exc), "ARGS_INVALID") from exc
        finally:
            self._leave()

    def describe(self, sql: str) -> DescribeResult:
        statement = single_statement(sql)
        if is_begin_readonly(statement):
            return DescribeResult([], [], False, True)
        conn = self._enter()
        try:
            info = apsw.ext.query_info(conn, statement)
        except apsw.Error as exc:
            raise hrana_error_from_sqlite(exc) from exc
        finally:
            self._leave()
        params = [_with_prefix(statement, name) for name in (info.bindings_names or [None] * info.bindings_count)]
        return DescribeResult(
            params=params,
            cols=[Col(name, decltype) for name, decltype in (info.description or ())],
            is_explain=bool(info.is_explain),
            is_readonly=bool(info.is_readonly),
        )

    def sequence(self, sql: str) -> None:
        conn = self._enter()
        try:
            for _ in conn.execute(sql):
                pass
        except apsw.Error as exc:
            raise hrana_error_from_sqlite(exc) from exc
        finally:
            self._leave()

    def is_autocommit(self) -> bool:
        return self.conn is None or not self.conn.in_transaction

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except apsw.Error:
            pass
        finally:
            conn.close()
            if self._holds_lock:
                self._holds_lock = False
                self.store.lock.release_shared()


class PrimaryBackend(Backend):
    def __init__(self, store: PrimaryStore) -> None:
        self.store = store

    def open_session(self, access: Access) -> Session:
        return PrimarySession(self.store, access)
