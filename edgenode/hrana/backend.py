"""The seam between the Hrana server and a database.

The server speaks the protocol (streams, batons, batches, conditions, value encoding); a backend
only runs SQL. Backends in this project: the primary (apsw/SQLite connections) and the node
(libSQL connections, or forwarding writes to a primary).

Contract for backends (the server relies on all of it):

- Named arguments reach `Session.execute` as a dict keyed by the name exactly as the client sent
  it: with its `:`/`@`/`$` prefix or without one (the clients send both). Backends must accept
  both spellings; `normalize_named_args` in `edgenode.hrana.sql` does that for SQLite-style
  engines.
- `StmtResult.affected_row_count` is the statement's own changes: 0 for anything that is not
  INSERT/UPDATE/DELETE/REPLACE (SQLite's `changes()` carries over from earlier statements).
  `last_insert_rowid` is set only for INSERT/REPLACE statements, else None.
- A statement string with more than one statement (a trailing `;` or comment is fine) raises
  `HranaError(..., "SQL_MANY_STATEMENTS")` from `execute` and `describe`.
- Read-only access is enforced by the backend: the server only hands `access` to `open_session`;
  a read-only session raises `HranaError(..., "SQLITE_READONLY")` on writes.
- `BEGIN TRANSACTION READONLY` (what @libsql/client's `transaction("read")` sends) is passed
  through untouched; backends over plain SQLite must run it as a deferred read-only transaction
  (`edgenode.hrana.sql.is_begin_readonly` detects it).
- Errors meant for the client are `HranaError` with a string code (SQLITE_CONSTRAINT,
  SQLITE_UNKNOWN, SQL_PARSE_ERROR, SQL_INPUT_ERROR, SQLITE_READONLY, ...). Any other exception is
  reported as SQLITE_UNKNOWN with its message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edgenode.auth import Access

# Python values; ints are exact signed 64-bit integers.
Value = None | int | float | str | bytes


@dataclass(slots=True)
class Col:
    name: str | None
    decltype: str | None


@dataclass(slots=True)
class StmtResult:
    cols: list[Col]
    rows: list[list[Value]]
    affected_row_count: int
    last_insert_rowid: int | None
    rows_read: int = 0
    rows_written: int = 0
    query_duration_ms: float = 0.0
    # The server's position once the statement ran (Hrana's opaque u64; None when the backend has none).
    replication_index: int | None = None


@dataclass(slots=True)
class DescribeResult:
    params: list[str | None]
    cols: list[Col]
    is_explain: bool
    is_readonly: bool


class HranaError(Exception):
    """A statement-level error reported to the client as {"message", "code"}.

    `code` is a string such as SQLITE_CONSTRAINT (the Rust client fails on anything else)."""

    def __init__(self, message: str, code: str = "SQLITE_UNKNOWN"):
        super().__init__(message)
        self.message = message
        self.code = code

    def __repr__(self) -> str:
        return f"HranaError({self.message!r}, {self.code!r})"


class Session(ABC):
    """The database side of one Hrana stream. Methods are synchronous; the server calls them from a
    worker thread, never two at once for the same session (it serialises each stream)."""

    @abstractmethod
    def execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        """Run one statement. `args` is a list (positional) or a dict (named, keys as sent, see module doc)."""

    @abstractmethod
    def describe(self, sql: str) -> DescribeResult:
        """Describe one statement without running it. `params` are names with prefix, None for `?`."""

    @abstractmethod
    def sequence(self, sql: str) -> None:
        """Run several statements, returning no rows (stops at the first error, which it raises)."""

    @abstractmethod
    def is_autocommit(self) -> bool:
        """True when no transaction is open on this session."""

    @abstractmethod
    def close(self) -> None:
        """Roll back anything open and release the connection. Must be idempotent."""

    # Optional, on the event loop: a session that can answer some statements without blocking saves
    # the worker-thread hop (most of a point read's cost). Both default to "not here".

    async def try_execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult | None:
        """Run the statement on the event loop if this session can without blocking, else None (the
        server then calls `execute` in a worker thread). Errors are raised as from `execute`."""
        return None

    def try_close(self) -> bool:
        """Close now if that cannot block (nothing open), returning True; else False (`close` runs in
        a worker thread)."""
        return False


class Backend(ABC):
    # False when open_session never blocks (allocates a session object only): the server then calls
    # it on the event loop, saving a thread hop on every stateless request.
    open_session_blocks: bool = True

    @abstractmethod
    def open_session(self, access: Access) -> Session:
        """Open the database side of a new stream; synchronous, called in a worker thread."""


__all__ = ["Backend", "Col", "DescribeResult", "HranaError", "Session", "StmtResult", "Value"]
