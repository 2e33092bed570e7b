"""What the standalone and the replica sessions (the database side of protocol streams) share.

Sessions are synchronous and run in the Hrana server's worker threads, while the node's database
is driven from the event loop (connection owners, leases, the replica's scheduler). `LoopBridge`
runs a coroutine on the loop and waits for it, so each session call costs one hop to the loop.
Statement rules come from `edgenode.statements`; their errors become Hrana errors here.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from edgenode import statements
from edgenode.analysis import Analysis, AnalysisError, StatementAnalyzer
from edgenode.binding import for_libsql
from edgenode.errors import DatabaseError, SQLError
from edgenode.hrana.backend import Col, DescribeResult, HranaError, StmtResult, Value
from edgenode.hrana.sql import error_code_for_sqlite_message, named_args_to_positional
from edgenode.results import StatementOutcome

T = TypeVar("T")

# Statements that open a transaction when none is open (the others of their kind end one).
_STARTS_TRANSACTION = re.compile(r"^\s*(?:BEGIN|SAVEPOINT)\b", re.IGNORECASE)


class LoopBridge:
    """Runs coroutines on the node's event loop from other threads."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self.loop
        if loop is None or loop.is_closed():
            coro.close()
            raise HranaError("the node is not running", "SERVER_SHUTTING_DOWN")
        if threading.get_ident() == getattr(loop, "_thread_id", None):
            coro.close()
            raise RuntimeError("LoopBridge.run called on the event loop thread; it would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, loop).result()


def starts_transaction(sql: str) -> bool:
    return _STARTS_TRANSACTION.match(sql) is not None


def hrana_error(exc: DatabaseError) -> HranaError:
    """A data-layer refusal in Hrana's terms (SQL errors keep the code SQLite's message implies)."""
    if type(exc) is SQLError:
        return HranaError(exc.message, error_code_for_sqlite_message(exc.message))
    return HranaError(exc.message, exc.hrana_code)


def analyze(analyzer: StatementAnalyzer, sql: str) -> Analysis:
    """Classify one statement (already split off by `single_statement`) or raise a HranaError."""
    try:
        return statements.analyze(analyzer, sql)
    except DatabaseError as exc:
        raise hrana_error(exc) from exc


def check_write(analysis: Analysis, can_write: bool, read_only_txn: bool = False) -> None:
    try:
        statements.check_write(analysis, can_write=can_write, read_only_txn=read_only_txn, stream=True)
    except DatabaseError as exc:
        raise hrana_error(exc) from exc


def stream_pragma_of(analysis: Analysis) -> tuple[str, int] | None:
    """The per-stream PRAGMA this statement sets (name, 0/1), or None; a bad value is a HranaError."""
    try:
        return statements.stream_setting(analysis)
    except DatabaseError as exc:
        raise HranaError(exc.message, "SQLITE_UNKNOWN") from exc


def with_prefix(sql: str, name: str | None) -> str | None:
    """The analyzer reports parameter names without their `:`/`@`/`$`; Hrana's describe carries them."""
    if not name:
        return None
    if name[:1] in ":@$?":
        return name
    match = re.search(r"([:@$])" + re.escape(name) + r"(?![\w$])", sql)
    return (match.group(1) if match else ":") + name


def describe(analysis: Analysis) -> DescribeResult:
    return DescribeResult(
        params=[with_prefix(analysis.sql, name) for name in analysis.param_names],
        cols=[Col(name, decltype) for name, decltype in analysis.columns],
        is_explain=analysis.is_explain,
        # As sqlite3_stmt_readonly (which sqld reports): transaction control itself writes nothing.
        is_readonly=analysis.is_readonly or analysis.is_transaction_control,
    )


def positional_args(analysis: Analysis, args: list[Value] | dict[str, Value]) -> list[Value]:
    """Arguments in parameter order. Named arguments may come with or without their prefix; a name
    not sent binds NULL, as in SQLite. Positional ones must match the statement's parameter count."""
    if isinstance(args, dict):
        if not args:
            return [None] * analysis.param_count
        if any(name is None for name in analysis.param_names):
            raise HranaError("the statement uses positional '?' parameters; send positional args", "ARGS_INVALID")
        params = [with_prefix(analysis.sql, name) for name in analysis.param_names]
        return named_args_to_positional(params, args)
    if len(args) != analysis.param_count:
        raise HranaError(f"the statement takes {analysis.param_count} argument(s), {len(args)} given", "ARGS_INVALID")
    return list(args)


def bind(
    analyzer: StatementAnalyzer, analysis: Analysis, args: list[Value] | dict[str, Value]
) -> tuple[str, list[Any]]:
    """The statement and its arguments as a libsql connection runs them exactly (`edgenode.binding`)."""
    try:
        return for_libsql(analyzer, analysis.sql, positional_args(analysis, args))
    except AnalysisError as exc:
        raise HranaError(str(exc), error_code_for_sqlite_message(str(exc))) from exc


def stmt_result(outcome: StatementOutcome | SQLError, columns: tuple[tuple[str, str | None], ...] = ()) -> StmtResult:
    """The Hrana result of a statement run by `engine.execute` (raises its error as a HranaError).

    `columns` are the analyzer's (name, declared type): the binding reports names only."""
    if isinstance(outcome, SQLError):
        raise HranaError(outcome.message, error_code_for_sqlite_message(outcome.message))
    decltypes: list[str | None] = [decltype for _, decltype in columns]
    if len(decltypes) != len(outcome.columns):
        decltypes = [None] * len(outcome.columns)
    return StmtResult(
        cols=[Col(name, decltype) for name, decltype in zip(outcome.columns, decltypes, strict=True)],
        rows=outcome.rows,
        affected_row_count=outcome.rows_affected,
        last_insert_rowid=outcome.last_insert_rowid,
        rows_read=len(outcome.rows),
        rows_written=outcome.rows_affected,
    )


def empty_result() -> StmtResult:
    return StmtResult(cols=[], rows=[], affected_row_count=0, last_insert_rowid=None)
