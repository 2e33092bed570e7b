"""The statement rules every front-end applies, in one place.

The libsql binding cannot classify statements, so each one is analyzed before it runs
(`edgenode.analysis`). The rules below decide what a request may run: one statement per string,
reads only where only reads are allowed, no ATTACH/DETACH/VACUUM INTO (they reach outside the
database), no PRAGMA settings (connections are shared; the node's profile owns them), and on
REST no transaction control inside a batch (the request is the transaction). REST, Hrana and the
vectors layer all call these functions; the errors they raise say how each front-end reports them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgenode import values
from edgenode.analysis import Analysis, AnalysisError, StatementAnalyzer
from edgenode.binding import for_libsql
from edgenode.errors import DatabaseError, ManyStatements, NotAuthorized, ReadOnlyError, SQLError
from edgenode.expect import PRELUDE_SQL as EXPECT_PRELUDE
from edgenode.results import Params, PlainStatement, Statement
from edgenode.stream_pragmas import STREAM_PRAGMAS, StreamPragmaError, stream_pragma

Prepared = list[tuple[str, list[Any], Analysis]]


def _at(where: str | None, message: str) -> str:
    return f"{where}: {message}" if where else message


def analyze(analyzer: StatementAnalyzer, sql: str, where: str | None = None) -> Analysis:
    """Classify one statement; a string holding several is refused."""
    try:
        analysis = analyzer.analyze(sql)
    except AnalysisError as exc:
        raise SQLError(_at(where, str(exc))) from exc
    if analysis.has_more_statements:
        raise ManyStatements(_at(where, "several statements in one string; send each statement separately"))
    return analysis


def check_write(
    analysis: Analysis,
    *,
    can_write: bool = True,
    read_only_txn: bool = False,
    stream: bool = False,
    where: str | None = None,
) -> None:
    """Refuse a statement that writes where writing is not allowed, or that no client may run.
    `stream`: a protocol stream's statement, which may set the per-stream PRAGMAs sqld allows."""
    if analysis.is_readonly or analysis.is_transaction_control:
        return
    if not can_write:
        raise ReadOnlyError(
            _at(where, f"attempt to write a readonly database: this token is read-only ({analysis.why_not_readonly})")
        )
    if read_only_txn:
        raise ReadOnlyError(
            _at(
                where,
                f"attempt to write a readonly database: the transaction is read-only ({analysis.why_not_readonly})",
            )
        )
    if analysis.touches_files:
        raise NotAuthorized(_at(where, "ATTACH, DETACH and VACUUM INTO reach outside the database and are refused"))
    if analysis.changes_pragma and not (stream and stream_setting(analysis) is not None):
        # Connections are shared by requests and streams: a setting would leak to other clients (the
        # per-stream ones are kept with the stream: stream_pragmas.py).
        also = f"; a stream may set {' and '.join(STREAM_PRAGMAS)}" if stream else ""
        raise NotAuthorized(_at(where, f"PRAGMA settings are managed by the node's profile (--profile){also}"))


def stream_setting(analysis: Analysis) -> tuple[str, int] | None:
    """The per-stream PRAGMA this statement sets (name, 0/1), or None."""
    try:
        return stream_pragma(analysis)
    except StreamPragmaError as exc:
        raise SQLError(str(exc)) from exc


def check_read(analysis: Analysis) -> None:
    """The REST read endpoint runs reads only."""
    if not analysis.is_readonly:
        raise ReadOnlyError(f"this endpoint only reads: {analysis.why_not_readonly}; use /api/v1/execute")


def bind_params(analysis: Analysis, params: Params, where: str) -> list[Any]:
    """Check parameters against what the statement declares and turn them into a positional list
    (exact values: `binding.for_libsql` prepares them for a libsql connection; a replica forwards
    them to its primary as they are)."""
    if params is None:
        params = []
    if isinstance(params, dict):
        given = {str(k).lstrip(":@$"): v for k, v in params.items()}
        names = analysis.param_names
        if any(n is None for n in names):
            raise DatabaseError(f"{where}: the statement uses positional '?' parameters; send params as a list")
        missing = [n for n in names if n not in given]
        if missing:
            raise DatabaseError(f"{where}: missing named parameter(s): {', '.join(missing)}")
        extra = sorted(set(given) - set(names))
        if extra:
            raise DatabaseError(f"{where}: unknown named parameter(s): {', '.join(extra)}")
        ordered = [given[n] for n in names]  # type: ignore[index]
    else:
        ordered = list(params)
        if len(ordered) != analysis.param_count:
            raise DatabaseError(
                f"{where}: the statement takes {analysis.param_count} parameter(s), {len(ordered)} given"
            )
    try:
        return [values.from_json(v, f"{where}.params[{i}]") for i, v in enumerate(ordered)]
    except values.ValueError_ as exc:
        raise DatabaseError(str(exc)) from exc


def bind_statement(
    analyzer: StatementAnalyzer, analysis: Analysis, params: Params, where: str
) -> tuple[str, list[Any]]:
    """The statement and its checked parameters as a libsql connection runs them exactly (`edgenode.binding`)."""
    try:
        return for_libsql(analyzer, analysis.sql, bind_params(analysis, params, where))
    except AnalysisError as exc:
        raise SQLError(f"{where}: {exc}") from exc


def prepare_read(analyzer: StatementAnalyzer, sql: str) -> Analysis:
    analysis = analyze(analyzer, sql, "sql")
    check_read(analysis)
    return analysis


def prepare_writes(analyzer: StatementAnalyzer, statements: Sequence[Statement]) -> Prepared:
    """Classify and bind every statement of a REST batch before anything runs, so a bad one changes nothing."""
    if not statements:
        raise DatabaseError("statements: give at least one statement")
    prepared = []
    current = analyzer
    temps: list[str] = []
    for index, (sql, params) in enumerate(statements):
        where = f"statements[{index}]"
        analysis = analyze(current, sql, where)
        if sql in EXPECT_PRELUDE:
            # The expect_rows check's TEMP view and trigger (edgenode.expect), which its guards use:
            # temp objects on the mirror, no fork (a fork copies the main schema only: see below).
            temps.append(sql)
            current.add_temp(sql)
        elif analysis.is_ddl:
            # Later statements of this batch may use what this one creates.
            if current is analyzer:
                current = analyzer.fork()
                for temp in temps:
                    current.add_temp(temp)
            current.apply_ddl(sql)
        if analysis.is_transaction_control:
            raise DatabaseError(
                f"{where}: BEGIN/COMMIT/ROLLBACK/SAVEPOINT are not allowed; the request is one transaction"
            )
        check_write(analysis, where=where)
        prepared.append((*bind_statement(current, analysis, params, where), analysis))
    return prepared


def plain(prepared: Prepared) -> list[PlainStatement]:
    """What a connection owner needs of prepared statements (small to pickle)."""
    return [(sql, params, a.is_dml, a.is_insert) for sql, params, a in prepared]
