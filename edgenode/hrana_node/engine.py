"""Functions that run inside a connection-owner process (`ProcessOwner.call` sends them by reference).

Each returns the statement's outcome together with whether the connection is left inside a
transaction, so a stream learns both in one round trip to the owner.
"""

from __future__ import annotations

from typing import Any

from edgenode.database import SQLError, StatementOutcome, run_statement
from edgenode.hrana_node import stream_pragmas


def execute(
    conn: Any,
    sql: str,
    params: list[Any],
    want_rows: bool,
    is_dml: bool,
    is_insert: bool,
    settings: stream_pragmas.Settings = (),
) -> tuple[StatementOutcome | SQLError, bool]:
    """One statement, as is, under the stream's PRAGMA settings; an engine error is returned (not
    raised) so the transaction state comes back too."""
    stream_pragmas.enter(conn, settings)
    try:
        outcome: StatementOutcome | SQLError = run_statement(conn, sql, params, want_rows, is_dml, is_insert)
    except SQLError as exc:
        outcome = exc
    finally:
        stream_pragmas.leave(conn)
    return outcome, bool(conn.in_transaction)


def rollback(conn: Any) -> bool:
    """Roll back whatever is open; True when the connection is clean afterwards."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except ValueError:
            pass  # the engine already rolled back
    stream_pragmas.leave(conn)
    return not conn.in_transaction
