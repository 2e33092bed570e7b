"""Commit markers of the change feed: the one rule for every writer that commits (issue #16).

A unit of writes (a transaction, or a savepoint within one: one write of a group commit) that appended
captured changes (ops 'I', 'U', 'D', see `edgenode.feed`) to `_edgenode_changes` appends, before
it commits, one op 'C' row whose `rid` is the seq of its first change; the change stream turns it
into a commit event. Foundation-level so the node's writer (`edgenode.engine`) and the primary
(`edgenode.primary.backend`) write the same marker: replicas of either see the same boundaries.

`before` is the feed's last seq before the unit's first change (`feed_seq`, read while the
writer holds the write lock, or one less than the first feed row the unit inserted). Every feed
row above it belongs to the unit, since nothing else writes while the lock is held.

The functions take any DB-API-like connection whose `execute(sql, params)` returns an iterable
cursor (libsql, apsw); a database without a feed is not an error (nothing to mark).
"""

from __future__ import annotations

import re
from typing import Any

CHANGES_TABLE = "_edgenode_changes"
COMMIT_OP = "C"
CAPTURED_OPS = ("I", "U", "D")

SEQ_SQL = f"SELECT seq FROM sqlite_sequence WHERE name = '{CHANGES_TABLE}'"
# After the unit's captured changes, naming the first one; nothing when it captured none.
MARK_SQL = (
    f"INSERT INTO {CHANGES_TABLE}(tbl, rid, op) SELECT '', min(seq), '{COMMIT_OP}' FROM {CHANGES_TABLE} "
    "WHERE seq > ? AND op IN ('I', 'U', 'D') HAVING count(*) > 0"
)
# Takes a marker back when the statement it preceded failed (a COMMIT refused by a deferred
# constraint, a RELEASE of no such savepoint): the unit is not over yet.
UNMARK_SQL = f"DELETE FROM {CHANGES_TABLE} WHERE seq > ? AND op = '{COMMIT_OP}'"

# Statements that end a unit: COMMIT / END, and RELEASE: a savepoint is a unit of its own (one
# write of a group commit or of the forward combiner's group; a client's own savepoints split its
# transaction into units that still become visible together), and RELEASE of the outermost one
# commits a transaction SAVEPOINT started.
_ENDS_UNIT = re.compile(r"^\s*(?:COMMIT|END|RELEASE)\b", re.IGNORECASE)


def ends_unit(sql: str) -> bool:
    return bool(_ENDS_UNIT.match(sql))


def _missing(exc: Exception) -> bool:
    return "no such table" in str(exc)


def feed_seq(conn: Any) -> int | None:
    """The feed's last seq, None when the database has no AUTOINCREMENT table yet."""
    try:
        rows = conn.execute(SEQ_SQL, []).fetchall()
    except Exception as exc:
        if _missing(exc):
            return None
        raise
    return int(rows[0][0]) if rows else 0


def mark(conn: Any, before: int) -> None:
    """Append the marker of the unit whose changes follow `before` (nothing when it captured none)."""
    try:
        conn.execute(MARK_SQL, [before]).fetchall()
    except Exception as exc:
        if not _missing(exc):
            raise


def unmark(conn: Any, before: int) -> None:
    """Take back the marker `mark(conn, before)` appended, if any."""
    conn.execute(UNMARK_SQL, [before]).fetchall()
