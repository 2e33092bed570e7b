"""What the data layer refuses, with the REST status and code and the Hrana code each kind maps to.

One class per kind of failure, so every front-end reports a kind the same way: REST answers
`{"error": {"code": code, "message": ...}}` with `status`, Hrana answers `{"message", "code": hrana_code}`.
"""

from __future__ import annotations


class DatabaseError(Exception):
    """A request the database refuses. `code` and `status` map straight to the API's error body."""

    status = 400
    code = "bad_request"
    hrana_code = "SQL_INPUT_ERROR"

    def __init__(self, message: str, index: int | None = None) -> None:
        # Both in args so the error pickles across the connection-owner process boundary.
        super().__init__(message, index)
        self.message = message
        self.index = index

    def __str__(self) -> str:
        return self.message


class SQLError(DatabaseError):
    code = "sql_error"
    hrana_code = "SQLITE_UNKNOWN"


class ManyStatements(DatabaseError):
    """Several statements in one string: each front-end takes one statement per string."""

    hrana_code = "SQL_MANY_STATEMENTS"


class ReadOnlyError(DatabaseError):
    status = 403
    code = "read_only"
    hrana_code = "SQLITE_READONLY"


class NotAuthorized(ReadOnlyError):
    """A statement no client may run here (ATTACH, PRAGMA settings), whatever its token."""

    hrana_code = "SQLITE_AUTH"


class LimitError(DatabaseError):
    code = "limit_exceeded"


class QueryTimeout(DatabaseError):
    status = 408
    code = "query_timeout"
    hrana_code = "SQLITE_INTERRUPT"


class Unavailable(DatabaseError):
    status = 503
    code = "unavailable"
    hrana_code = "SERVER_NOT_READY"


class PrimaryUnavailable(Unavailable):
    """The primary could not be reached or refused the node (a replica's writes)."""

    hrana_code = "PRIMARY_UNAVAILABLE"
