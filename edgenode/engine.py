"""What runs inside a connection-owner process (`edgenode.owner.ProcessOwner.call` sends these by reference).

Each function takes the owner's libSQL connection first. Kept light: owner processes import this
module (and what it imports) on their first call, never the rest of the node.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import libsql

from edgenode import commit_marks, stream_pragmas, values
from edgenode.errors import DatabaseError, LimitError, QueryTimeout, ReadOnlyError, SQLError
from edgenode.migrations import LibsqlTarget, MigrationReport, run_migrations
from edgenode.migrations import status as migration_status
from edgenode.pragmas import PragmaReport, Profile, apply_profile
from edgenode.results import ExecResult, PlainStatement, QueryResult, StatementOutcome

SCHEMA_SQL = "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"


def open_local(path: str, profile: Profile, reader: bool, key: Any = None) -> tuple[Any, PragmaReport]:
    # key: an edgenode.encryption.Secret (its repr hides the value) or None.
    conn = libsql.connect(path, isolation_level=None, encryption_key=key.value if key is not None else None)
    report = apply_profile(profile, lambda sql: conn.execute(sql).fetchall())
    if reader:
        # Defence in depth behind the analyzer: the engine itself refuses writes here.
        conn.execute("PRAGMA query_only = 1")
    return conn, report


def read_schema(conn: Any) -> list[str]:
    return [row[0] for row in conn.execute(SCHEMA_SQL).fetchall()]


def schema_version(conn: Any) -> int:
    """SQLite's schema cookie: changes with every schema change, by any connection to the file."""
    return int(conn.execute("PRAGMA schema_version").fetchone()[0])


def read_versioned_schema(conn: Any) -> tuple[int, list[str]]:
    # The version first: a change landing between the two reads leaves the mirror newer than the
    # version it is labelled with, so the next check refreshes again (never the stale direction).
    return schema_version(conn), read_schema(conn)


def migrate_local(conn: Any, sql_dir: Path | None) -> MigrationReport:
    return run_migrations(LibsqlTarget(conn), sql_dir)


def migration_status_local(conn: Any, sql_dir: Path | None) -> list[dict[str, Any]]:
    return migration_status(LibsqlTarget(conn), sql_dir)


def _fetch(cursor: Any, max_rows: int, deadline: float, timeout_ms: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    while True:
        batch = cursor.fetchmany(64)
        if not batch:
            return rows
        rows.extend([values.to_json(v) for v in row] for row in batch)
        if len(rows) > max_rows:
            raise LimitError(f"query returned more than max_rows={max_rows} rows; add a LIMIT or raise --max-rows")
        if time.monotonic() > deadline:
            raise QueryTimeout(
                f"query ran longer than query_timeout_ms={timeout_ms}; narrow it or raise --query-timeout-ms"
            )


def run_read(conn: Any, sql: str, params: list[Any], max_rows: int, timeout_ms: int) -> QueryResult:
    """One read, rows JSON-ready (REST), bounded by `max_rows` and `timeout_ms`."""
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        cursor = conn.execute(sql, params)
        rows = _fetch(cursor, max_rows, deadline, timeout_ms)
    except DatabaseError:
        raise
    except ValueError as exc:
        message = str(exc)
        if "readonly" in message or "read-only" in message:
            raise ReadOnlyError(message) from exc
        raise SQLError(message) from exc
    columns = [d[0] for d in cursor.description] if cursor.description else []
    return QueryResult(columns=columns, rows=rows)


Guard = tuple[Callable[[Any], bool], Callable[[Any, list[ExecResult]], None]]


def run_transaction(conn: Any, statements: list[PlainStatement], guard: Guard | None = None) -> list[ExecResult] | None:
    """All statements in one transaction on a connection opened with isolation_level=None.

    `guard` (see edgenode.idempotency) runs inside the transaction: its first function first, and
    when that says no the transaction is rolled back and None returned; its second one last,
    before COMMIT, with the results."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        if guard is not None and not guard[0](conn):
            conn.execute("ROLLBACK")
            return None
        feed_before = _feed_seq(conn)
        results = _run_statements(conn, statements)
        if guard is not None:
            guard[1](conn, results)
        if feed_before is not None:
            _mark_commit(conn, feed_before)
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except ValueError:
            pass  # already rolled back by the engine
        raise
    return results


def _run_statements(conn: Any, statements: list[PlainStatement]) -> list[ExecResult]:
    results: list[ExecResult] = []
    for index, (sql, params, is_dml, is_insert) in enumerate(statements):
        try:
            cursor = conn.execute(sql, params)
            cursor.fetchall()
        except ValueError as exc:
            raise SQLError(f"statements[{index}]: {exc}", index) from exc
        results.append(
            ExecResult(
                rows_affected=max(cursor.rowcount, 0) if is_dml else 0,
                last_insert_rowid=cursor.lastrowid if is_insert else None,
            )
        )
    return results


# One autocommit write of a group (edgenode.standalone.commits): a REST batch, ("batch", statements),
# or a protocol stream's single statement, ("statement", (sql, params, want_rows, is_dml, is_insert)).
GroupMember = tuple[str, Any]
# Per member: (True, its result) or (False, the error that undid it).
GroupOutcome = tuple[bool, Any]
_SAVEPOINT = "edgenode_write"


def _run_member(conn: Any, member: GroupMember) -> Any:
    kind, payload = member
    if kind == "batch":
        return _run_statements(conn, payload)
    return run_statement(conn, *payload)


def run_group(conn: Any, members: list[GroupMember]) -> list[GroupOutcome]:
    """Several autocommit writes in one transaction and one COMMIT (one fsync where the profile
    syncs), each inside its own SAVEPOINT: a write that fails is rolled back to its savepoint alone
    and reported to its caller; the others commit.

    Two ways a failure reaches past its savepoint, both handled so no write pays for another's:
    a conflict clause that ends the whole transaction (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)`)
    undoes the writes before it, which run again in a fresh transaction; and a COMMIT that fails
    (a deferred foreign key, an I/O error) commits nothing, so each write then runs alone."""
    outcomes: list[GroupOutcome | None] = [None] * len(members)
    while True:
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if not todo:
            return [outcome for outcome in outcomes if outcome is not None]
        conn.execute("BEGIN IMMEDIATE")
        done: list[int] = []
        try:
            for i in todo:
                conn.execute(f"SAVEPOINT {_SAVEPOINT}")
                try:
                    # Each write of the group is its own unit for the change stream: a commit
                    # marker after its captured changes, undone with it if it fails.
                    feed_before = _feed_seq(conn)
                    value = _run_member(conn, members[i])
                    if feed_before is not None:
                        _mark_commit(conn, feed_before)
                except Exception as exc:  # this write's error, reported to its caller
                    outcomes[i] = (False, exc)
                    if not conn.in_transaction:
                        for j in done:  # undone with the transaction: they run again
                            outcomes[j] = None
                        done = []
                        break
                    conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
                    conn.execute(f"RELEASE {_SAVEPOINT}")
                    continue
                conn.execute(f"RELEASE {_SAVEPOINT}")
                outcomes[i] = (True, value)
                done.append(i)
            if conn.in_transaction:
                conn.execute("COMMIT")
        except ValueError as exc:
            # COMMIT refused: nothing of this transaction is committed.
            _rollback_quietly(conn)
            if len(done) == 1:
                outcomes[done[0]] = (False, SQLError(str(exc)))
            else:
                for i in done:
                    outcomes[i] = run_group(conn, [members[i]])[0]
        except BaseException:
            _rollback_quietly(conn)
            raise


def _rollback_quietly(conn: Any) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except ValueError:
            pass


def _feed_seq(conn: Any) -> int | None:
    """The change feed's last seq, None when no feed exists (edgenode.commit_marks)."""
    try:
        row = conn.execute(commit_marks.SEQ_SQL).fetchone()
    except ValueError:
        return None  # no AUTOINCREMENT table yet
    return int(row[0]) if row else 0


def _mark_commit(conn: Any, before: int) -> None:
    try:
        conn.execute(commit_marks.MARK_SQL, [before]).fetchall()
    except ValueError as exc:
        if "no such table" not in str(exc):
            raise


def run_statement(
    conn: Any, sql: str, params: list[Any], want_rows: bool, is_dml: bool, is_insert: bool
) -> StatementOutcome:
    """Run one statement as is (no implicit transaction).

    Rows keep their Python types (bytes stay bytes): the caller encodes them for its protocol.
    """
    try:
        cursor = conn.execute(sql, params)
        rows = [list(row) for row in cursor.fetchall() or ()]
    except ValueError as exc:
        raise SQLError(str(exc)) from exc
    columns = [d[0] for d in cursor.description] if cursor.description else []
    return StatementOutcome(
        columns=columns,
        rows=rows if want_rows else [],
        rows_affected=max(cursor.rowcount, 0) if is_dml else 0,
        last_insert_rowid=cursor.lastrowid if is_insert else None,
    )


def execute(
    conn: Any,
    sql: str,
    params: list[Any],
    want_rows: bool,
    is_dml: bool,
    is_insert: bool,
    settings: stream_pragmas.Settings = (),
) -> tuple[StatementOutcome | SQLError, bool]:
    """One statement of a protocol stream, under the stream's PRAGMA settings, with whether the
    connection is left inside a transaction (a stream learns both in one round trip). An engine
    error is returned, not raised, so the transaction state comes back too."""
    stream_pragmas.enter(conn, settings)
    try:
        outcome: StatementOutcome | SQLError = run_statement(conn, sql, params, want_rows, is_dml, is_insert)
    except SQLError as exc:
        outcome = exc
    finally:
        stream_pragmas.leave(conn)
    return outcome, bool(conn.in_transaction)


def begin_unit(
    conn: Any, sql: str, settings: stream_pragmas.Settings = ()
) -> tuple[StatementOutcome | SQLError, bool, int | None]:
    """A protocol stream's BEGIN (or SAVEPOINT) on the writer, with the change feed's seq once the
    transaction is open: where its commit marker starts counting (`end_unit`)."""
    outcome, in_txn = execute(conn, sql, [], False, False, False, settings)
    return outcome, in_txn, (_feed_seq(conn) if in_txn else None)


def end_unit(
    conn: Any, before: int, sql: str, params: list[Any], settings: stream_pragmas.Settings = ()
) -> tuple[StatementOutcome | SQLError, bool, int]:
    """A statement that ends a unit of a protocol stream's transaction (COMMIT, END, RELEASE: see
    edgenode.commit_marks) with the marker of what the unit captured since `before` written first,
    and taken back if the statement fails; with where the next unit starts counting."""
    try:
        _mark_commit(conn, before)
    except ValueError:
        pass  # a marker is an addition: the statement runs and words any error itself
    outcome, in_txn = execute(conn, sql, params, False, False, False, settings)
    if isinstance(outcome, SQLError) and in_txn:
        commit_marks.unmark(conn, before)
        return outcome, in_txn, before
    after = _feed_seq(conn) if in_txn else None
    return outcome, in_txn, before if after is None else after


def rollback(conn: Any) -> bool:
    """Roll back whatever is open; True when the connection is clean afterwards."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except ValueError:
            pass  # the engine already rolled back
    stream_pragmas.leave(conn)
    return not conn.in_transaction
