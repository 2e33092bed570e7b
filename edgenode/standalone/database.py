"""`LocalDatabase`: a standalone node's data, one writer and a few readers on a plain local file.

Every libSQL connection lives in its own process (`edgenode.owner.ProcessOwner`), so blocking
engine calls never touch the event loop and a runaway read can be stopped by killing its process.
The readers are one pool (`edgenode.standalone.readers`) shared by REST and Hrana.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from edgenode import engine
from edgenode.analysis import StatementAnalyzer
from edgenode.database import Connections, Database
from edgenode.errors import QueryTimeout, SQLError, Unavailable
from edgenode.idempotency import KeyedWrite, run_keyed_local
from edgenode.migrations import MigrationReport
from edgenode.owner import OwnerDied, ProcessOwner
from edgenode.pragmas import Profile
from edgenode.results import NO_POSITION, Params, QueryResult, Statement, WritePosition, WriteResult
from edgenode.standalone.commits import GroupCommitter
from edgenode.standalone.readers import Reader, ReaderPool, ReaderStopped
from edgenode.standalone.sessions import LocalConnections
from edgenode.statements import bind_statement, plain, prepare_read, prepare_writes

DB_FILE = "edgenode.db"


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
        encryption_key: Any = None,
    ) -> None:
        super().__init__()
        self.data_dir = data_dir
        self.path = data_dir / DB_FILE
        self.profile = profile
        self.encryption_key = encryption_key
        self.migrate = migrate
        self.sql_dir = sql_dir
        self.max_rows = max_rows
        self.timeout_ms = timeout_ms
        self.migration_report: MigrationReport | None = None
        key = encryption_key
        self._writer = ProcessOwner("edgenode-writer", engine.open_local, str(self.path), profile, False, key)
        # The one pool of reader processes: REST reads, Hrana reads and read transactions.
        self.readers = ReaderPool(readers, engine.open_local, str(self.path), profile, True, key)
        self._write_lock = asyncio.Lock()
        self.commits = GroupCommitter(self._writer, self._write_lock, self._after_group)
        self.analyzer: StatementAnalyzer | None = None
        self._schema_version: int | None = None  # the file's schema cookie the mirror was built from
        # Told each new mirror's version before the change that made it is acknowledged (HTTP workers).
        self.schema_listeners: list[Callable[[int], None]] = []
        self.schema_refreshes = 0
        self.started = False

    async def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The writer first: it creates the file and switches it to WAL before readers open it.
        self.pragma_report = await self._writer.start()
        if self.migrate:
            self.migration_report = await self._writer.call(engine.migrate_local, self.sql_dir)
        self._schema_version, schema = await self._writer.call(engine.read_versioned_schema)
        self.analyzer = StatementAnalyzer(lambda: schema)
        self._tell_schema(self._schema_version)
        await self.readers.start()
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.commits.stop()
        await self.readers.stop(tuple(self.profile.on_close))
        await self._writer.close(self.profile.on_close)

    def not_ready_reason(self) -> str | None:
        return None if self.started else "database is not open yet"

    async def refresh_schema(self) -> None:
        """Rebuild the analyzer's schema mirror (after DDL, or a schema change by another connection)."""
        version, schema = await self._writer.call(engine.read_versioned_schema)
        analyzer = self.analyzer
        if analyzer is not None:
            analyzer._schema = lambda: schema  # the next refresh reads the new schema
            await asyncio.to_thread(analyzer.refresh)
        self._schema_version = version
        self.schema_refreshes += 1
        self._tell_schema(version)

    def _tell_schema(self, version: int) -> None:
        for listener in self.schema_listeners:
            listener(version)

    async def refresh_schema_if_changed(self) -> bool:
        """After a statement failed analysis ("no such table"): rebuild the mirror only when the file's
        schema changed since it was built (another connection's DDL). A missing table stays missing
        without the rebuild's cost, which every write's change listeners would otherwise pay."""
        version = await self.readers.schema_version(self.timeout_ms / 1000)  # None: cannot tell, refresh
        if version is not None and version == self._schema_version:
            return False
        await self.refresh_schema()
        return True

    async def migration_status(self) -> list[dict[str, Any]]:
        return await self._writer.call(engine.migration_status_local, self.sql_dir)

    def _analyzer(self) -> StatementAnalyzer:
        if self.analyzer is None:
            raise Unavailable("database is not open yet")
        return self.analyzer

    # -- REST reads and writes -------------------------------------------------------------------

    async def read(
        self, sql: str, params: Params = None, *, max_rows: int | None = None, timeout_ms: int | None = None
    ) -> QueryResult:
        analyzer = self._analyzer()
        try:
            analysis = prepare_read(analyzer, sql)
        except SQLError:
            # The mirror may trail a schema change made by another connection to the file.
            if not await self.refresh_schema_if_changed():
                raise
            analysis = prepare_read(analyzer, sql)
        sql, bound = bind_statement(analyzer, analysis, params, "params")
        max_rows = max_rows or self.max_rows
        timeout_ms = timeout_ms or self.timeout_ms
        # The binding cannot interrupt a statement that computes without yielding rows: past the
        # timeout the pool stops its process (ReaderStopped) and replaces it.
        try:
            result = await self.readers.call(
                timeout_ms / 1000 + 0.05, engine.run_read, sql, bound, max_rows, timeout_ms
            )
        except ReaderStopped:
            raise QueryTimeout(
                f"query ran longer than query_timeout_ms={timeout_ms}; narrow it or raise --query-timeout-ms"
            ) from None
        except OwnerDied as exc:
            raise Unavailable("the reader process died; retry the request") from exc
        result.decltypes = [t for _, t in analysis.columns]
        return result

    async def write(self, statements: Sequence[Statement], keyed: KeyedWrite | None = None) -> WriteResult:
        prepared = prepare_writes(self._analyzer(), statements)
        is_ddl = any(a.is_ddl for _, _, a in prepared)
        if keyed is None:
            # Concurrent writes share a transaction and a COMMIT (edgenode.standalone.commits).
            ok, value = await self.commits.commit(("batch", plain(prepared)), is_ddl)
            if not ok:
                raise value
            return WriteResult(value)
        async with self._write_lock:
            try:
                # The key is claimed and recorded in the write's own transaction (edgenode.idempotency).
                results, replayed = await self._writer.call(run_keyed_local, plain(prepared), keyed)
            except OwnerDied as exc:
                await self._writer.restart()
                raise Unavailable("the writer process died; the transaction was not committed, retry it") from exc
        await self._after_group(is_ddl)
        return WriteResult(results, replayed=replayed)

    async def commit_statement(
        self, sql: str, params: list[Any], want_rows: bool, is_dml: bool, is_insert: bool, is_ddl: bool, wait: float
    ) -> tuple[bool, Any]:
        """A protocol stream's autocommit statement in the next group commit: (True, StatementOutcome)
        or (False, its error; `WriterBusy` when it waited `wait` s for the writer and never ran)."""
        member = ("statement", (sql, params, want_rows, is_dml, is_insert))
        return await self.commits.commit(member, is_ddl, wait)

    async def _after_group(self, ddl: bool) -> None:
        if ddl:
            await self.refresh_schema()
        await self.notify_changed()

    # -- protocol streams ------------------------------------------------------------------------

    def connections(self, *, lease_timeout: float) -> Connections:
        return LocalConnections(self, lease_timeout=lease_timeout)

    @contextlib.asynccontextmanager
    async def lease_writer(self) -> AsyncIterator[ProcessOwner]:
        """The writer connection alone, for a protocol stream's statement or interactive transaction.

        Held until the stream commits, rolls back or expires; REST writes wait meanwhile (SQLite
        has one writer anyway). Callers must leave no transaction open when they give it back.
        """
        async with self._write_lock:
            yield self._writer
        await self.notify_changed()

    def lease_reader(self) -> contextlib.AbstractAsyncContextManager[Reader]:
        """One reader connection alone (read transactions of protocol streams); raising OwnerDied
        inside gives it up for replacement. Leases leave at least one reader to other reads."""
        return self.readers.lease()

    # -- freshness and reporting -----------------------------------------------------------------

    async def wait_fresh(
        self, min_frame: int | None, max_staleness_ms: int | None, min_generation: int | None = None
    ) -> None:
        return None  # one file, read where it is written: always fresh

    def position(self) -> WritePosition:
        return NO_POSITION

    def status(self) -> dict[str, Any]:
        size = self.path.stat().st_size if self.path.exists() else 0
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "role": self.role,
            "path": str(self.path.resolve()),
            "size_bytes": size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "pragmas": self.pragma_report.as_dict() if self.pragma_report else None,
            "readers": len(self.readers.readers),
            "readers_replaced": self.readers.replaced,
            "schema_refreshes": self.schema_refreshes,
            "group_commits": self.commits.stats.as_dict(),
        }
