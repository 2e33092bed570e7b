"""The node's database: the libSQL file, the connections that own it, the read and write paths.

Every libSQL connection lives on its own thread (`Owner`) so blocking engine calls never touch
the event loop and a connection is only ever used by the thread that opened it. Statements are
classified by `StatementAnalyzer` before they run (read-only enforcement, several statements in
one string, named parameters), because the libsql binding can do none of that itself.

`LocalDatabase` is a standalone node: one writer and a few readers on a plain local file.
A replica node has its own implementation (`edgenode.replica`) of the same interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import libsql

from edgenode import values
from edgenode.analysis import Analysis, AnalysisError, StatementAnalyzer
from edgenode.binding import for_libsql
from edgenode.migrations import LibsqlTarget, MigrationReport, run_migrations
from edgenode.migrations import status as migration_status
from edgenode.owner import OwnerDied, ProcessOwner
from edgenode.pragmas import PragmaReport, Profile, apply_profile

if TYPE_CHECKING:
    from edgenode.idempotency import KeyedWrite

log = logging.getLogger(__name__)
T = TypeVar("T")
DB_FILE = "edgenode.db"
SCHEMA_SQL = "SELECT sql FROM sqlite_schema WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' ORDER BY rowid"


class DatabaseError(Exception):
    """A request the database refuses. `code` and `status` map straight to the API's error body."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, index: int | None = None) -> None:
        # Both in args so the error pickles across the connection-owner process boundary.
        super().__init__(message, index)
        self.message = message
        self.index = index

    def __str__(self) -> str:
        return self.message


class SQLError(DatabaseError):
    code = "sql_error"


class ReadOnlyError(DatabaseError):
    status = 403
    code = "read_only"


class LimitError(DatabaseError):
    code = "limit_exceeded"


class QueryTimeout(DatabaseError):
    status = 408
    code = "query_timeout"


class Unavailable(DatabaseError):
    status = 503
    code = "unavailable"


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    decltypes: list[str | None] = field(default_factory=list)


@dataclass
class ExecResult:
    rows_affected: int
    last_insert_rowid: int | None


Statement = tuple[str, Sequence[Any] | dict[str, Any] | None]
ChangeListener = Callable[[], Awaitable[None]]


class Owner:
    """One libSQL connection and the single thread allowed to use it."""

    def __init__(self, name: str, opener: Callable[[], Any]) -> None:
        self.name = name
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: Any = None
        self._opener = opener
        self.busy_since: float | None = None

    async def start(self) -> None:
        def open_() -> None:
            self._conn = self._opener()

        await asyncio.get_running_loop().run_in_executor(self._executor, open_)

    async def run(self, fn: Callable[[Any], T]) -> T:
        def call() -> T:
            self.busy_since = time.monotonic()
            try:
                return fn(self._conn)
            finally:
                self.busy_since = None

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def run_sync(self, fn: Callable[[Any], T]) -> T:
        """For threads that are not the event loop (CLI, shutdown)."""
        return self._executor.submit(lambda: fn(self._conn)).result()

    async def close(self, on_close: Sequence[str] = ()) -> None:
        def close_() -> None:
            if self._conn is None:
                return
            for sql in on_close:
                try:
                    self._conn.execute(sql)
                except Exception as exc:  # optimize on close is best effort
                    log.debug("%s on close failed: %s", sql, exc)
            self._conn.close()
            self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close_)
        finally:
            self._executor.shutdown(wait=False)


def bind_params(analysis: Analysis, params: Sequence[Any] | dict[str, Any] | None, where: str) -> list[Any]:
    """Check parameters against what the statement declares and turn them into a positional list
    (exact values: `binding.for_libsql` prepares them for a libsql connection)."""
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
    analyzer: StatementAnalyzer, analysis: Analysis, params: Sequence[Any] | dict[str, Any] | None, where: str
) -> tuple[str, list[Any]]:
    """The statement and its checked parameters as a libsql connection runs them exactly (`edgenode.binding`)."""
    try:
        return for_libsql(analyzer, analysis.sql, bind_params(analysis, params, where))
    except AnalysisError as exc:
        raise SQLError(f"{where}: {exc}") from exc


def analyze(analyzer: StatementAnalyzer, sql: str, where: str) -> Analysis:
    try:
        analysis = analyzer.analyze(sql)
    except AnalysisError as exc:
        raise SQLError(f"{where}: {exc}") from exc
    if analysis.has_more_statements:
        raise DatabaseError(f"{where}: several statements in one string; send each statement separately")
    return analysis


class Database(ABC):
    """What the API, Hrana and vectors need from the node's data, whichever mode it runs in."""

    role: str
    path: Path
    pragma_report: PragmaReport | None = None

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    def add_change_listener(self, callback: ChangeListener) -> None:
        self._listeners.append(callback)

    async def notify_changed(self) -> None:
        for callback in list(self._listeners):
            try:
                await callback()
            except Exception:
                log.exception("change listener failed")

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def read(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        max_rows: int | None = None,
        timeout_ms: int | None = None,
    ) -> QueryResult: ...

    @abstractmethod
    async def write(self, statements: Sequence[Statement], keyed: KeyedWrite | None = None) -> list[ExecResult]:
        """One transaction. With `keyed`, at most once per key (edgenode.idempotency): a key already
        recorded returns its recorded results, applies nothing and sets `keyed.replayed`."""

    @abstractmethod
    def status(self) -> dict[str, Any]: ...


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


PlainStatement = tuple[str, list[Any], bool, bool]  # sql, bound params, is_dml, is_insert


def plain(prepared: list[tuple[str, list[Any], Analysis]]) -> list[PlainStatement]:
    """What a connection owner needs of prepared statements (small to pickle)."""
    return [(sql, params, a.is_dml, a.is_insert) for sql, params, a in prepared]


Guard = tuple[Callable[[Any], bool], Callable[[Any, list[ExecResult]], None]]


def run_transaction(conn: Any, statements: list[PlainStatement], guard: Guard | None = None) -> list[ExecResult] | None:
    """All statements in one transaction on a connection opened with isolation_level=None.

    `guard` (see edgenode.idempotency) runs inside the transaction: its first function first, and
    when that says no the transaction is rolled back and None returned; its second one last,
    before COMMIT, with the results."""
    conn.execute("BEGIN IMMEDIATE")
    results: list[ExecResult] = []
    try:
        if guard is not None and not guard[0](conn):
            conn.execute("ROLLBACK")
            return None
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
        if guard is not None:
            guard[1](conn, results)
        conn.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except ValueError:
            pass  # already rolled back by the engine
        raise
    return results


def prepare_writes(
    analyzer: StatementAnalyzer, statements: Sequence[Statement]
) -> list[tuple[str, list[Any], Analysis]]:
    """Classify and bind every statement before anything runs, so a bad one changes nothing."""
    if not statements:
        raise DatabaseError("statements: give at least one statement")
    prepared = []
    current = analyzer
    for index, (sql, params) in enumerate(statements):
        where = f"statements[{index}]"
        analysis = analyze(current, sql, where)
        if analysis.is_ddl:
            # Later statements of this batch may use what this one creates.
            if current is analyzer:
                current = analyzer.fork()
            current.apply_ddl(sql)
        if analysis.is_transaction_control:
            raise DatabaseError(
                f"{where}: BEGIN/COMMIT/ROLLBACK/SAVEPOINT are not allowed; the request is one transaction"
            )
        if analysis.touches_files:
            raise ReadOnlyError(f"{where}: ATTACH, DETACH and VACUUM INTO reach outside the database and are refused")
        if analysis.changes_pragma:
            raise ReadOnlyError(f"{where}: PRAGMA settings are managed by the node's profile (--profile)")
        prepared.append((*bind_statement(current, analysis, params, where), analysis))
    return prepared


@dataclass
class StatementOutcome:
    """One statement's full result, as a protocol backend (Hrana) reports it."""

    columns: list[str]
    rows: list[list[Any]]
    rows_affected: int
    last_insert_rowid: int | None


def run_statement(
    conn: Any, sql: str, params: list[Any], want_rows: bool, is_dml: bool, is_insert: bool
) -> StatementOutcome:
    """Run one statement as is (no implicit transaction) on an owner's connection.

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


def in_transaction(conn: Any) -> bool:
    return bool(conn.in_transaction)


def read_schema(conn: Any) -> list[str]:
    return [row[0] for row in conn.execute(SCHEMA_SQL).fetchall()]


def open_local(path: str, profile: Profile, reader: bool) -> tuple[Any, PragmaReport]:
    conn = libsql.connect(path, isolation_level=None)
    report = apply_profile(profile, lambda sql: conn.execute(sql).fetchall())
    if reader:
        # Defence in depth behind the analyzer: the engine itself refuses writes here.
        conn.execute("PRAGMA query_only = 1")
    return conn, report


def migrate_local(conn: Any, sql_dir: Path | None) -> MigrationReport:
    return run_migrations(LibsqlTarget(conn), sql_dir)


def migration_status_local(conn: Any, sql_dir: Path | None) -> list[dict[str, Any]]:
    return migration_status(LibsqlTarget(conn), sql_dir)


class LocalDatabase(Database):
    """Standalone: a plain local libSQL file, one writer and `readers` reader connections,
    each owned by its own process (see `edgenode.owner`)."""

    role = "standalone"

    def __init__(
        self,
        data_dir: Path,
        profile: Profile,
        readers: int = 2,
        *,
        migrate: bool = True,
        sql_dir: Path | None = None,
        max_rows: int = 10_000,
        timeout_ms: int = 5_000,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.path = data_dir / DB_FILE
        self.profile = profile
        self.migrate = migrate
        self.sql_dir = sql_dir
        self.max_rows = max_rows
        self.timeout_ms = timeout_ms
        self.migration_report: MigrationReport | None = None
        self._writer = ProcessOwner("edgenode-writer", open_local, str(self.path), profile, False)
        self._readers = [
            ProcessOwner(f"edgenode-reader-{i}", open_local, str(self.path), profile, True) for i in range(readers)
        ]
        self._idle: asyncio.Queue[ProcessOwner] = asyncio.Queue()
        self._write_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.analyzer: StatementAnalyzer | None = None
        self.started = False
        self.readers_replaced = 0

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The writer first: it creates the file and switches it to WAL before readers open it.
        self.pragma_report = await self._writer.start()
        if self.migrate:
            self.migration_report = await self._writer.call(migrate_local, self.sql_dir)
        schema = await self._writer.call(read_schema)
        self.analyzer = StatementAnalyzer(lambda: schema)
        await asyncio.gather(*(reader.start() for reader in self._readers))
        for reader in self._readers:
            self._idle.put_nowait(reader)
        self.started = True

    async def stop(self) -> None:
        self.started = False
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*(r.close(self.profile.on_close) for r in self._readers), return_exceptions=True)
        await self._writer.close(self.profile.on_close)

    async def refresh_schema(self) -> None:
        schema = await self._writer.call(read_schema)
        analyzer = self.analyzer
        if analyzer is not None:
            analyzer._schema = lambda: schema  # the next refresh reads the new schema
            await asyncio.to_thread(analyzer.refresh)

    async def migration_status(self) -> list[dict[str, Any]]:
        return await self._writer.call(migration_status_local, self.sql_dir)

    def _analyzer(self) -> StatementAnalyzer:
        if self.analyzer is None:
            raise Unavailable("database is not open yet")
        return self.analyzer

    async def read(
        self,
        sql: str,
        params: Sequence[Any] | dict[str, Any] | None = None,
        *,
        max_rows: int | None = None,
        timeout_ms: int | None = None,
    ) -> QueryResult:
        analysis = await self._analyze_read(sql)
        sql, bound = bind_statement(self._analyzer(), analysis, params, "params")
        max_rows = max_rows or self.max_rows
        timeout_ms = timeout_ms or self.timeout_ms
        reader = await self._idle.get()
        try:
            result = await asyncio.wait_for(
                reader.call(run_read, sql, bound, max_rows, timeout_ms), timeout_ms / 1000 + 0.05
            )
        except (TimeoutError, OwnerDied) as exc:
            # The binding cannot interrupt a statement that computes without yielding rows:
            # stop its process and give the pool a fresh reader.
            reader.kill()
            self._replace_later(reader)
            if isinstance(exc, TimeoutError):
                raise QueryTimeout(
                    f"query ran longer than query_timeout_ms={timeout_ms}; narrow it or raise --query-timeout-ms"
                ) from None
            raise Unavailable("the reader process died; retry the request") from exc
        except BaseException:
            self._idle.put_nowait(reader)
            raise
        self._idle.put_nowait(reader)
        result.decltypes = [t for _, t in analysis.columns]
        return result

    def _replace_later(self, reader: ProcessOwner) -> None:
        async def replace() -> None:
            try:
                await reader.restart()
            except Exception:
                log.exception("restarting %s failed", reader.name)
                return
            self.readers_replaced += 1
            self._idle.put_nowait(reader)

        task = asyncio.create_task(replace())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _analyze_read(self, sql: str) -> Analysis:
        analyzer = self._analyzer()
        try:
            analysis = analyze(analyzer, sql, "sql")
        except SQLError:
            # The mirror may trail a schema change made by another connection to the file.
            await self.refresh_schema()
            analysis = analyze(analyzer, sql, "sql")
        if not analysis.is_readonly:
            raise ReadOnlyError(f"this endpoint only reads: {analysis.why_not_readonly}; use /api/v1/execute")
        return analysis

    async def write(self, statements: Sequence[Statement], keyed: KeyedWrite | None = None) -> list[ExecResult]:
        prepared = prepare_writes(self._analyzer(), statements)
        async with self._write_lock:
            try:
                if keyed is None:
                    results = await self._writer.call(run_transaction, plain(prepared))
                    assert results is not None
                else:
                    from edgenode.idempotency import run_keyed_local  # it builds on this module

                    results, keyed.replayed = await self._writer.call(run_keyed_local, plain(prepared), keyed)
            except OwnerDied as exc:
                await self._writer.restart()
                raise Unavailable("the writer process died; the transaction was not committed, retry it") from exc
        if any(a.is_ddl for _, _, a in prepared):
            await self.refresh_schema()
        await self.notify_changed()
        return results

    @contextlib.asynccontextmanager
    async def lease_writer(self) -> AsyncIterator[ProcessOwner]:
        """The writer connection alone, for a protocol stream's interactive transaction.

        Held until the stream commits, rolls back or expires; REST writes wait meanwhile (SQLite
        has one writer anyway). Callers must leave no transaction open when they give it back.
        """
        async with self._write_lock:
            yield self._writer
        await self.notify_changed()

    @contextlib.asynccontextmanager
    async def lease_reader(self) -> AsyncIterator[ProcessOwner]:
        """One reader connection alone (read transactions of protocol streams)."""
        reader = await self._idle.get()
        try:
            yield reader
        except OwnerDied:
            reader.kill()
            self._replace_later(reader)
            raise
        self._idle.put_nowait(reader)

    async def schema_changed(self) -> None:
        """Tell the statement analyzer that DDL ran on a leased connection."""
        await self.refresh_schema()

    def status(self) -> dict[str, Any]:
        size = self.path.stat().st_size if self.path.exists() else 0
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "role": self.role,
            "path": str(self.path.resolve()),
            "size_bytes": size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "pragmas": self.pragma_report.as_dict() if self.pragma_report else None,
            "readers": len(self._readers),
            "readers_replaced": self.readers_replaced,
        }
