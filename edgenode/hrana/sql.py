"""Small SQL helpers shared by the backends: statement splitting, read-only BEGIN, named args, error codes.

They exist because the engines differ: libSQL's Python binding silently runs only the first of
several statements, swallows errors in `executescript`, refuses named parameters and raises bare
`ValueError`s; plain SQLite rejects libSQL's `BEGIN TRANSACTION READONLY`.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from edgenode.hrana.backend import HranaError, Value

_NAME_PREFIXES = (":", "@", "$")


def _skip_trivia(sql: str, pos: int, *, skip_semicolons: bool) -> int:
    """Index of the first character at or after pos that is not whitespace or a comment (or `;`)."""
    n = len(sql)
    while pos < n:
        ch = sql[pos]
        if ch.isspace() or (skip_semicolons and ch == ";"):
            pos += 1
        elif sql.startswith("--", pos):
            end = sql.find("\n", pos)
            pos = n if end < 0 else end + 1
        elif sql.startswith("/*", pos):
            end = sql.find("*/", pos + 2)
            pos = n if end < 0 else end + 2
        else:
            return pos
    return n


def split_statements(sql: str) -> list[str]:
    """Split sql into its statements (each without its trailing `;`), skipping empty ones.

    Uses SQLite's own tokenizer (`sqlite3_complete`) to find statement ends, so semicolons in
    strings, identifiers, comments and trigger bodies do not split.
    """
    statements: list[str] = []
    start = _skip_trivia(sql, 0, skip_semicolons=True)
    pos = start
    while start < len(sql):
        semi = sql.find(";", pos)
        if semi < 0:
            statements.append(sql[start:])
            break
        if sqlite3.complete_statement(sql[start : semi + 1]):
            statements.append(sql[start:semi])
            start = pos = _skip_trivia(sql, semi + 1, skip_semicolons=True)
        else:
            pos = semi + 1
    return statements


def single_statement(sql: str) -> str:
    """The one statement in sql, or HranaError SQL_NO_STATEMENT / SQL_MANY_STATEMENTS."""
    statements = split_statements(sql)
    if not statements:
        raise HranaError("SQL string does not contain any statement", "SQL_NO_STATEMENT")
    if len(statements) > 1:
        raise HranaError("SQL string contains more than one statement", "SQL_MANY_STATEMENTS")
    return statements[0]


_BEGIN_READONLY = re.compile(r"^\s*BEGIN\s+(?:TRANSACTION\s+)?READONLY\s*;?\s*$", re.IGNORECASE)


def is_begin_readonly(sql: str) -> bool:
    """True for libSQL's `BEGIN [TRANSACTION] READONLY`, which backends over plain SQLite must run as a
    deferred transaction that refuses writes (e.g. `BEGIN DEFERRED` plus `PRAGMA query_only`)."""
    return _BEGIN_READONLY.match(sql) is not None


def lookup_named_arg(args: dict[str, Value], param: str) -> tuple[bool, Value]:
    """Find the value for a parameter named in the SQL (with its prefix, e.g. `:id`).

    Clients send names with or without the prefix: an exact key wins, then the bare name.
    Returns (found, value).
    """
    if param in args:
        return True, args[param]
    if param[:1] in _NAME_PREFIXES and param[1:] in args:
        return True, args[param[1:]]
    return False, None


def named_args_to_positional(params: list[str | None], args: dict[str, Value]) -> list[Value]:
    """Positional values for a statement whose parameters are `params` (as from describe), for engines
    that cannot bind by name. Unnamed (`?`) parameters and names not sent bind NULL, as in SQLite."""
    values: list[Value] = []
    for param in params:
        values.append(lookup_named_arg(args, param)[1] if param is not None else None)
    return values


def strip_named_arg_prefixes(args: dict[str, Value]) -> dict[str, Value]:
    """Keys without their `:`/`@`/`$` prefix, for apsw, which looks named bindings up by bare name."""
    return {(k[1:] if k[:1] in _NAME_PREFIXES else k): v for k, v in args.items()}


# Ordered: the first matching fragment decides. Messages are SQLite's own (sqlite3ErrStr and friends).
_MESSAGE_CODES: tuple[tuple[str, str], ...] = (
    ("constraint failed", "SQLITE_CONSTRAINT"),
    ("syntax error", "SQL_PARSE_ERROR"),
    ("incomplete input", "SQL_PARSE_ERROR"),
    ("unrecognized token", "SQL_PARSE_ERROR"),
    ("attempt to write a readonly database", "SQLITE_READONLY"),
    ("readonly", "SQLITE_READONLY"),
    ("database table is locked", "SQLITE_LOCKED"),
    ("database schema is locked", "SQLITE_LOCKED"),
    ("database is locked", "SQLITE_BUSY"),
    ("datatype mismatch", "SQLITE_MISMATCH"),
    ("column index out of range", "SQLITE_RANGE"),
    ("bind or column index out of range", "SQLITE_RANGE"),
    ("interrupted", "SQLITE_INTERRUPT"),
    ("database disk image is malformed", "SQLITE_CORRUPT"),
    ("disk i/o error", "SQLITE_IOERR"),
    ("database or disk is full", "SQLITE_FULL"),
    ("string or blob too big", "SQLITE_TOOBIG"),
    ("file is not a database", "SQLITE_NOTADB"),
    ("unable to open database file", "SQLITE_CANTOPEN"),
    ("not authorized", "SQLITE_AUTH"),
    ("out of memory", "SQLITE_NOMEM"),
)


def error_code_for_sqlite_message(message: str) -> str:
    """Hrana error code for a bare SQLite error message (libSQL's Python binding raises ValueError with
    only the text). Plain SQLITE_ERROR messages such as "no such table" map to SQLITE_UNKNOWN, as sqld does."""
    lowered = message.lower()
    for fragment, code in _MESSAGE_CODES:
        if fragment in lowered:
            return code
    return "SQLITE_UNKNOWN"


_APSW_CODES = {
    "AbortError": "SQLITE_ABORT",
    "AuthError": "SQLITE_AUTH",
    "BindingsError": "ARGS_INVALID",
    "BusyError": "SQLITE_BUSY",
    "CantOpenError": "SQLITE_CANTOPEN",
    "ConstraintError": "SQLITE_CONSTRAINT",
    "CorruptError": "SQLITE_CORRUPT",
    "FullError": "SQLITE_FULL",
    "IOError": "SQLITE_IOERR",
    "InterruptError": "SQLITE_INTERRUPT",
    "LockedError": "SQLITE_LOCKED",
    "MismatchError": "SQLITE_MISMATCH",
    "NoMemError": "SQLITE_NOMEM",
    "NotADBError": "SQLITE_NOTADB",
    "PermissionsError": "SQLITE_PERM",
    "RangeError": "SQLITE_RANGE",
    "ReadOnlyError": "SQLITE_READONLY",
    "TooBigError": "SQLITE_TOOBIG",
}


def error_code_for_apsw(exc: BaseException) -> str:
    """Hrana error code for an apsw exception (its class names the primary result code; plain
    SQLError is SQLITE_ERROR, refined by its message)."""
    code = _APSW_CODES.get(type(exc).__name__)
    return code if code is not None else error_code_for_sqlite_message(str(exc))


def hrana_error_from_sqlite(exc: BaseException) -> HranaError:
    """Wrap any engine exception as a HranaError with a mapped code (HranaErrors pass through)."""
    if isinstance(exc, HranaError):
        return exc
    mod: Any = type(exc).__module__
    code = error_code_for_apsw(exc) if mod == "apsw" else error_code_for_sqlite_message(str(exc))
    return HranaError(str(exc), code)
