"""`ReplicaDatabase`: the node's data as an embedded libSQL replica of a primary.

Reads run on the local replica through the node's one libSQL connection (the replica file has no
other opener: the analyzer's schema mirror is built from `sqlite_schema` read through it). Writes
go to the primary as one Hrana request, then the node syncs until it sees them. The scheduler
pulls on an interval, sooner when the watcher sees a new commit on the primary.

Traps of the PyPI `libsql` 0.1.x binding this module is shaped by:
- `conn.sync()` and every statement hold the GIL for their whole duration: the connection lives
  in a child process (`edgenode.owner.ProcessOwner`, functions in connection.py), so the event
  loop never waits on it. The client's HTTP has no timeout: syncs go through the relay process
  (relay.py), which bounds them and cuts long catch-ups into slices so reads interleave.
- `sync()` returns nothing: progress is read from the `-info` file the client writes atomically.
- On a synced connection, statements the client does not classify as reads are sent to the
  primary, including `PRAGMA x` without a value (and `PRAGMA foreign_keys = ...` with one). PRAGMAs
  are therefore set with a value and read back as `SELECT * FROM pragma_x`, never bare.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from edgenode import engine, startup
from edgenode.analysis import StatementAnalyzer
from edgenode.config import Settings
from edgenode.database import Connections, Database
from edgenode.errors import DatabaseError, Unavailable
from edgenode.owner import OwnerDied, ProcessOwner
from edgenode.pragmas import Profile
from edgenode.replica import bootstrap
from edgenode.replica.connection import ResyncNeeded, classify, open_replica, pull, pull_local_first, synced_head
from edgenode.replica.files import InvalidInfo, Position, ReplicaFiles
from edgenode.replica.forwarder import Forwarder
from edgenode.replica.identity import database_id_problem, local_problem, normalize_url, write_identity
from edgenode.replica.lease import Lease
from edgenode.replica.local_first import LocalFirst
from edgenode.replica.metrics import ReplicaMetrics
from edgenode.replica.relay import Relay
from edgenode.replica.scheduler import Scheduler, SyncFailed, SyncOutcome
from edgenode.replica.sessions import ReplicaConnections
from edgenode.replica.watcher import Watcher
from edgenode.results import NO_POSITION, ExecResult, Params, QueryResult, Statement, WritePosition, WriteResult
from edgenode.statements import bind_params, bind_statement, plain, prepare_read, prepare_writes
from edgenode.tls import client_context

if TYPE_CHECKING:
    from edgenode.idempotency import KeyedWrite

log = logging.getLogger("edgenode.replica")
T = TypeVar("T")
PULL_GAP = 0.05  # seconds between local-first pulls, at least
__all__ = ["ReplicaDatabase", "ResyncNeeded", "classify"]


def position_reached(current: Position | None, min_generation: int | None, min_frame: int | None) -> bool:
    """Whether a replica at `current` holds everything up to (min_generation, min_frame)."""
    if min_frame is None and min_generation is None:
        return True
    if current is None:
        return False
    wanted_generation = current.generation if min_generation is None else min_generation
    return (current.generation, current.frame) >= (wanted_generation, min_frame or 0)


class ReplicaDatabase(Database):
    role = "replica"

    def __init__(self, settings: Settings, profile: Profile, *, watch: bool = True) -> None:
        super().__init__()
        assert settings.primary_url
        if logging.getLogger("httpx").level == logging.NOTSET:
            # httpx logs every request at INFO; a replica makes several per second.
            logging.getLogger("httpx").setLevel(logging.WARNING)
        self.settings = settings
        self.profile = profile
        self.primary_url = normalize_url(settings.primary_url)
        self.files = ReplicaFiles(settings.data_path)
        self.path: Path = self.files.db
        self.max_rows = settings.max_rows
        self.timeout_ms = settings.query_timeout_ms
        self.local_first = settings.write_mode == "local-first"
        self.relay = Relay(self.primary_url, settings.sync_timeout, refuse_push=self.local_first)
        self.owner: ProcessOwner | None = None
        self.scheduler = Scheduler(
            self._sync, interval=settings.sync_interval, timeout=settings.sync_timeout, max_lag=settings.max_lag
        )
        self.metrics = ReplicaMetrics(self.scheduler.lag, lambda: self.current.generation if self.current else None)
        self.collector = self.metrics.collector
        self.forwarder = Forwarder(
            self.primary_url,
            settings.primary_token,
            min(5.0, settings.sync_timeout),
            self.scheduler,
            self.metrics,
            lambda: self.current,
        )
        # local-first: writes commit here and are pushed in the background (replica/local_first.py);
        # forward: the Forwarder sends them to the primary. The Forwarder stays for Hrana transactions.
        self.lf = (
            LocalFirst(
                self.call,
                self.primary_url,
                settings.primary_token,
                min(5.0, settings.sync_timeout),
                settings.idempotency_retention,
                self.metrics,
                self.scheduler.trigger,
                self._primary_database_id,
                lambda: self.database_id,
                settings.max_push_bytes,
            )
            if self.local_first
            else None
        )
        self.watcher = (
            Watcher(
                self.primary_url,
                settings,
                self.scheduler,
                position=lambda: self.current,
                writes_in_flight=lambda: self.forwarder.in_flight,
            )
            if watch and settings.long_poll
            else None
        )
        self.analyzer: StatementAnalyzer | None = None
        self.current: Position | None = None
        self.progress: bootstrap.Progress | None = None
        self.opened = False
        self.resyncs: dict[str, int] = {}
        self.last_resync: dict[str, Any] | None = None
        self.database_id: str | None = None
        self._relay_database: str | None = None  # what the relay was last told to expect
        self._schema: list[str] = []
        self._checked_primary = False
        self._http: httpx.AsyncClient | None = None
        self._last_pull = 0.0
        self._feed_bound: int | None = None  # local-first: the change feed's head in the pulled state
        self._pull_hold = asyncio.Lock()  # local-first: a backup's snapshot must not lose its WAL frames
        self.lease = Lease()  # local-first: an interactive transaction holding the replica connection (§7)

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        headers = {"authorization": f"Bearer {self.settings.primary_token}"} if self.settings.primary_token else {}
        self._http = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.settings.sync_timeout), verify=client_context()
        )
        await asyncio.to_thread(self.files.dir.mkdir, parents=True, exist_ok=True)
        if not self.relay.alive():
            await asyncio.to_thread(self.relay.spawn)
        startup.mark("replica_relay_spawned")
        problem = await asyncio.to_thread(local_problem, self.files, self.primary_url)
        startup.mark("replica_files_checked")
        if problem:
            self._count_resync(problem_reason(problem), problem)
            await asyncio.to_thread(self.files.wipe)
        if self.files.db.exists():
            # A replica from an earlier run: serve reads from it at once, even with the primary down.
            await self._open()
            startup.mark("replica_opened")
        else:
            # Components read the database as they start (vector collections), so the first bootstrap
            # runs before start() returns; if it fails, the scheduler keeps retrying it.
            self.scheduler.phase = "bootstrapping"
            reporter = asyncio.create_task(self._report_progress())
            try:
                await self.scheduler.run_once()
            finally:
                reporter.cancel()
            if self.scheduler.halted and not self.opened:
                # Nothing to serve and nothing retrying can fix: stop now, saying why.
                await self.stop()
                raise RuntimeError(self.scheduler.halted)
            if not self.opened:
                log.error(
                    "no replica yet and the first bootstrap from %s failed: %s (retrying every few seconds)",
                    self.primary_url,
                    self.scheduler.last_error,
                )
        self.scheduler.start()
        self.scheduler.trigger()
        if self.watcher:
            self.watcher.start()
        if self.lf:
            self.lf.start()
            self.lf.wake()

    def spawn_relay(self) -> None:
        """Start the sync relay ahead of `start()` (it takes an interpreter's start-up to listen)."""
        self.relay.spawn()

    async def _report_progress(self) -> None:
        while True:
            await asyncio.sleep(2.0)
            if self.progress is not None:
                p = self.progress.as_dict()
                log.info(
                    "bootstrap %s: %s of %s bytes, eta %s s",
                    p["phase"],
                    p["bytes_done"],
                    p["bytes_total"],
                    p["eta_seconds"],
                )

    async def stop(self) -> None:
        if self.lf:
            await self.lf.stop()
        if self.watcher:
            await self.watcher.stop()
        await self.scheduler.stop()
        await self._close()
        await asyncio.to_thread(self.relay.stop)
        await asyncio.to_thread(self.forwarder.close)
        if self._http:
            await self._http.aclose()

    async def _close(self) -> None:
        self.opened = False
        owner, self.owner = self.owner, None
        if owner is not None:
            await owner.close()

    async def _open(self) -> None:
        await self._close()
        relay_url = self.relay.url
        owner = ProcessOwner(
            "edgenode-replica",
            open_replica,
            str(self.settings.data_path),
            relay_url,
            self.settings.primary_token or "",
            self.profile,
            self.local_first,
        )
        try:
            position, schema, report, node_id = await owner.start()
            startup.mark("replica_connection_open")
        except InvalidInfo as exc:
            raise ResyncNeeded("invalid_local_state", str(exc)) from exc
        self.owner = owner
        self.pragma_report = report
        if self.lf is not None:
            self.lf.node_id = node_id
            self._feed_bound = await owner.call(synced_head)
        self.current = position
        await self._set_schema(schema)
        self.opened = True

    async def call(self, fn: Callable[..., T], *args: Any, lease: object | None = None) -> T:
        """Run `fn(conn, *args)` in the replica connection's process (module-level `fn`, picklable args);
        while a local-first transaction holds the connection (`self.lease`), only with its token."""
        await self.lease.gate(lease)
        owner = self.owner
        if owner is None or not self.opened:
            raise Unavailable(f"the replica is not open ({self.scheduler.state}); retry in a moment")
        try:
            return await owner.call(fn, *args)
        except OwnerDied as exc:
            # The connection's process is gone (killed, crashed): the next sync reopens it.
            self.opened = False
            self.scheduler.trigger()
            raise Unavailable("the replica connection restarted; retry in a moment") from exc

    async def _set_schema(self, schema: list[str]) -> None:
        if self.analyzer is not None and schema == self._schema:
            return
        self._schema = schema
        if self.analyzer is None:
            self.analyzer = await asyncio.to_thread(StatementAnalyzer, lambda: schema)
        else:
            self.analyzer._schema = lambda: schema
            await asyncio.to_thread(self.analyzer.refresh)

    # -- sync ----------------------------------------------------------------------------------------

    async def _sync(self) -> SyncOutcome:
        started = time.monotonic()
        try:
            if not self.files.db.exists():
                await self._bootstrap(self.scheduler.phase or "bootstrapping")
            if not self._checked_primary:
                await self._check_primary()
            try:
                outcome = await self._pull(started)
            except ResyncNeeded as exc:
                self._count_resync(exc.reason, str(exc))
                # Another database's replica is closed before the download; the same one keeps serving.
                await self._bootstrap("resyncing", discard_first=exc.reason == "primary_changed")
                outcome = await self._pull(started)
        except Exception:
            self.metrics.sync_errors.inc()
            raise
        self.metrics.syncs.inc()
        startup.mark("replica_first_sync")
        self.metrics.sync_duration.observe(outcome.duration)
        if outcome.frames:
            self.metrics.frames_applied.inc(outcome.frames)
        if outcome.changed:
            await self.notify_changed()
        return outcome

    async def _primary_database_id(self) -> str | None:
        """The database the primary serves now (None: it names none). Raises when it cannot be asked."""
        assert self._http is not None
        try:
            info = await bootstrap.primary_info(self._http, self.primary_url)
        except bootstrap.PrimaryRefused:
            raise  # the pusher pauses on it (a credentials problem, not an outage)
        except (httpx.HTTPError, bootstrap.BootstrapError) as exc:
            raise Unavailable(f"cannot reach the primary at {self.primary_url}: {exc}") from exc
        database_id = info.get("database_id")
        return database_id if isinstance(database_id, str) else None

    async def _check_primary(self) -> None:
        """Once per start: is this still the primary (and database) the replica was built from?"""
        assert self._http is not None
        try:
            info = await bootstrap.primary_info(self._http, self.primary_url)
        except (httpx.HTTPError, bootstrap.BootstrapError) as exc:
            raise Unavailable(f"cannot reach the primary at {self.primary_url}: {exc}") from exc
        self._checked_primary = True
        self.database_id = info.get("database_id") if isinstance(info.get("database_id"), str) else None
        problem = await asyncio.to_thread(database_id_problem, self.files, self.database_id)
        if problem is None and self.current and info["current_generation"] < self.current.generation:
            problem = (
                f"the primary is at generation {info['current_generation']}, behind the replica's "
                f"{self.current.generation}: it is not the primary this replica was built from"
            )
        if problem:
            self._count_resync("primary_changed", problem)
            await self._bootstrap("resyncing", discard_first=True)

    async def _pull(self, started: float) -> SyncOutcome:
        relay_restarted = await asyncio.to_thread(self.relay.ensure)
        if relay_restarted or self._relay_database != self.database_id:
            await asyncio.to_thread(self.relay.set_database, self.database_id)
            self._relay_database = self.database_id
        if relay_restarted or self.owner is None or not self.opened:
            await self._open()  # a restarted relay may listen elsewhere; a dead owner needs a new process
        assert self.owner is not None
        if self.local_first:
            # A local-first pull holds the one connection (rollback, sync, replay) while writes wait:
            # pulls asked for by pushes, the watcher and waiters coalesce to one per PULL_GAP (§4).
            wait = self._last_pull + PULL_GAP - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        await self.lease.gate()  # never cut the WAL under an open local transaction
        if self.owner is None or not self.opened:
            raise Unavailable("the replica connection closed while the pull waited")
        try:
            if self.local_first:
                async with self._pull_hold:
                    before, after, schema, duration, truncated, self._feed_bound = await self.owner.call(
                        pull_local_first, str(self.settings.data_path), self.relay.url, self.settings.sync_timeout
                    )
            else:
                before, after, schema, duration, truncated = await self.owner.call(
                    pull, str(self.settings.data_path), self.relay.url, self.settings.sync_timeout
                )
        except InvalidInfo as exc:
            raise ResyncNeeded("invalid_local_state", str(exc)) from exc
        except OwnerDied:
            self.opened = False
            raise
        self._last_pull = time.monotonic()
        frames = after.frame - before.frame if after.generation == before.generation else after.frame
        self.current = after
        if schema is not None:
            await self._set_schema(schema)
        if self.lf is not None:
            self.lf.wake()  # the primary answered: retry pushes now, not after their backoff
        if self.progress is not None and self.progress.phase == "pulling frames":
            # A bootstrap's catch-up may take several (sliced) syncs; progress shows each of them.
            self.progress.frames_applied = after.frame
            if not truncated:
                self.progress.phase = "done"
        return SyncOutcome(
            started=started, duration=duration, frames=max(frames, 0), changed=after != before, complete=not truncated
        )

    async def _bootstrap(self, phase: str, discard_first: bool = False) -> None:
        """Download the primary's current generation and make it the replica.

        While resyncing a replica of the same primary, the old one keeps serving reads until the
        new one is in place; a replica of another primary is closed first (`discard_first`)."""
        assert self._http is not None
        self.scheduler.phase = phase
        if discard_first and self.opened:
            await self._close()
        progress = self.progress = bootstrap.Progress(phase="starting")
        try:
            for _ in range(3):
                info = await bootstrap.primary_info(self._http, self.primary_url)
                generation = info["current_generation"]
                database_id = info.get("database_id") if isinstance(info.get("database_id"), str) else None
                try:
                    partial = await bootstrap.download(self._http, self.primary_url, generation, self.files, progress)
                    break
                except bootstrap.GenerationGone:
                    continue  # the primary rolled over during the download: ask again
            else:
                raise bootstrap.BootstrapError("the primary kept moving to new generations during the download")
            self.metrics.bootstrap_bytes.inc(progress.bytes_done - progress.resumed_from)
            progress.phase = "placing"
            await self._close()
            await asyncio.to_thread(
                bootstrap.place,
                self.files,
                partial,
                generation,
                lambda: write_identity(self.files, self.primary_url, database_id, generation),
            )
            self.database_id = database_id
            self._checked_primary = True
            progress.phase = "pulling frames"
            await self._open()
            log.info(
                "bootstrapped generation %d from %s (%d bytes, %d resumed)",
                generation,
                self.primary_url,
                progress.bytes_done,
                progress.resumed_from,
            )
        except httpx.HTTPError as exc:
            raise Unavailable(f"bootstrap from {self.primary_url} failed: {type(exc).__name__}: {exc}") from exc
        finally:
            if self.opened:
                self.scheduler.phase = None

    def _count_resync(self, reason: str, message: str) -> None:
        self.resyncs[reason] = self.resyncs.get(reason, 0) + 1
        self.metrics.resyncs.labels(reason).inc()
        self.last_resync = {"reason": reason, "message": message, "at": time.time()}
        log.warning("replica will be rebuilt from the primary (%s): %s", reason, message)

    # -- reads -----------------------------------------------------------------------------------

    def _analyzer(self) -> StatementAnalyzer:
        if not self.opened or self.analyzer is None:
            detail = ""
            if self.progress is not None:
                p = self.progress.as_dict()
                detail = f" ({p['phase']}: {p['bytes_done']} of {p['bytes_total']} bytes)"
            raise Unavailable(f"the replica is not ready yet: {self.scheduler.state}{detail}")
        return self.analyzer

    async def read(
        self, sql: str, params: Params = None, *, max_rows: int | None = None, timeout_ms: int | None = None
    ) -> QueryResult:
        analyzer = self._analyzer()
        analysis = prepare_read(analyzer, sql)
        sql, bound = bind_statement(analyzer, analysis, params, "params")
        max_rows = max_rows or self.max_rows
        timeout_ms = timeout_ms or self.timeout_ms
        result = await self.call(engine.run_read, sql, bound, max_rows, timeout_ms)
        result.decltypes = [t for _, t in analysis.columns]
        return result

    async def wait_fresh(
        self, min_frame: int | None, max_staleness_ms: int | None, min_generation: int | None = None
    ) -> None:
        """Wait (bounded by the sync timeout) until the replica meets the bound, else 503.

        The position bound is (min_generation, min_frame), compared in that order; without
        `min_generation`, `min_frame` counts within the replica's current generation (so a replica
        still on an older generation could pass it: clients should send both). When the bound is
        not met locally, one sync that starts now settles it either way: the position was
        acknowledged before this request arrived."""
        if min_frame is None and max_staleness_ms is None and min_generation is None:
            return
        self._analyzer()
        fresh_frame = position_reached(self.current, min_generation, min_frame)
        lag = self.scheduler.lag()
        fresh_time = max_staleness_ms is None or (lag is not None and lag * 1000 <= max_staleness_ms)
        if fresh_frame and fresh_time:
            return
        try:
            await self.scheduler.sync_after()
        except SyncFailed as exc:
            position = (
                f"generation {min_generation} frame {min_frame or 0}"
                if min_generation is not None
                else f"frame {min_frame}"
            )
            wanted = position if not fresh_frame else f"staleness at most {max_staleness_ms} ms"
            raise Unavailable(f"the replica cannot reach {wanted} now: {exc}") from exc

    # -- writes ----------------------------------------------------------------------------------

    async def write(self, statements: Sequence[Statement], keyed: KeyedWrite | None = None) -> WriteResult:
        prepared = prepare_writes(self._analyzer(), statements)
        # Hrana carries 64-bit integers: the primary gets the statements as sent, parameters exact.
        exact = [
            (sql, bind_params(analysis, params, f"statements[{i}]"))
            for i, ((sql, params), (_, _, analysis)) in enumerate(zip(statements, prepared, strict=True))
        ]
        if self.lf is None:
            return await self.forwarder.write(exact, prepared, keyed)
        if all(analysis.is_readonly for _, _, analysis in prepared):
            # Nothing to push: run it as reads here (errors surface as they would in a write), queue nothing.
            for sql, params, _ in prepared:
                await self.call(engine.run_read, sql, params, self.max_rows, self.timeout_ms)
            return WriteResult([ExecResult(0, None) for _ in prepared], self.position())
        results, write_id, replayed = await self.lf.write(exact, plain(prepared), keyed)
        if any(analysis.is_ddl for _, _, analysis in prepared):
            await self._set_schema(await self.call(engine.read_schema))
        if not replayed:
            await self.notify_changed()
        return WriteResult(results, self.position(), replayed, write_id=write_id, pending=True)

    def backup_hold(self) -> AbstractAsyncContextManager[Any]:
        # A local-first pull truncates the WAL back to the pulled frame: under a backup's open snapshot
        # that would remove (then overwrite) frames the copy still reads.
        return self._pull_hold if self.local_first else contextlib.nullcontext()

    def connections(self, *, lease_timeout: float) -> Connections:
        # Reads of every stream share the replica's one connection; transactions hold primary streams.
        return ReplicaConnections(self)

    def feed_bound(self) -> int | None:
        # Local-first: feed rows past the pulled state are speculative; their seqs are reused by
        # the primary's rows after a rollback, so consumers must not read them (§8).
        return self._feed_bound if self.local_first else None

    def position(self) -> WritePosition:
        current = self.current
        return WritePosition(current.generation, current.frame) if current is not None else NO_POSITION

    # -- status --------------------------------------------------------------------------------------

    def not_ready_reason(self) -> str | None:
        if self.scheduler.halted:
            return self.scheduler.halted
        if not self.opened:
            return f"database is not open yet (replica {self.scheduler.state})"
        lag = self.scheduler.lag()
        if lag is None:
            return "no sync with the primary since start"
        if lag > self.settings.max_lag:
            return f"replica lag {lag:.1f} s exceeds max_lag {self.settings.max_lag:g} s"
        return None

    def status(self) -> dict[str, Any]:
        size, wal = self.files.size_bytes()
        status = {
            "role": self.role,
            "path": str(self.path.resolve()),
            "size_bytes": size,
            "wal_bytes": wal,
            "primary_url": self.primary_url,
            "database_id": self.database_id,
            "generation": self.current.generation if self.current else None,
            "frame": self.current.frame if self.current else None,
            **self.scheduler.status(),
            "bootstrap": self.progress.as_dict() if self.progress else None,
            "resyncs": dict(self.resyncs),
            "last_resync": self.last_resync,
            "relay_restarts": self.relay.restarts,
            "long_poll": self.watcher.status() if self.watcher else None,
            "writes": self.forwarder.status(),
            "write_mode": self.settings.write_mode,
            "outbox": self.lf.status_extra() if self.lf else None,
            "pragmas": self.pragma_report.as_dict() if self.pragma_report else None,
        }
        return status

    async def migration_status(self) -> list[dict[str, Any]]:
        from edgenode.migrations import discover

        if not self.opened:
            return []
        try:
            result = await self.read("SELECT version FROM _edgenode_migrations")
            applied = {int(row[0]) for row in result.rows}
        except DatabaseError:
            applied = set()
        return [{"version": m.version, "name": m.name, "applied": m.version in applied} for m in discover()]


def problem_reason(problem: str) -> str:
    if "belongs to" in problem:
        return "primary_changed"
    if "identity" in problem:
        return "interrupted_bootstrap"
    return "invalid_local_state"
