"""Functions that run inside a connection-owner process (`ProcessOwner.call` sends them by reference).

Each returns the statement's outcome together with whether the connection is left inside a
transaction, so a stream learns both in one round trip to the owner.
"""

from __future__ import annotations

from typing import Any

from edgenode.database import SQLError, StatementOutcome, run_statement


def execute(
    conn: Any, sql: str, params: list[Any], want_rows: bool, is_dml: bool, is_insert: bool
) -> tuple[StatementOutcome | SQLError, bool]:
    """One statement, as is; an engine error is returned (not raised) so the transaction state comes back too."""
    try:
        outcome: StatementOutcome | SQLError = run_statement(conn, sql, params, want_rows, is_dml, is_insert)
    except SQLError as exc:
        outcome = exc
    return outcome, bool(conn.in_transaction)


def rollback(conn: Any) -> bool:
    """Roll back whatever is open; True when the connection is clean afterwards."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except ValueError:
            pass  # the engine already rolled back
    return not conn.in_transaction
