"""The `Database` interface: what the API, Hrana and vectors need from the node's data, in any mode.

Implementations: `edgenode.standalone.LocalDatabase` (a plain local libSQL file) and
`edgenode.replica.ReplicaDatabase` (an embedded replica of a primary). Callers use only what is
declared here; nothing probes an implementation for optional methods.

Like sqld's `MakeConnection`/`Connection`, every protocol front-end reaches the data through one
seam: REST calls `read`/`write`, Hrana opens per-stream sessions with `connections()`; on a
replica both end in the same forwarder to the primary (read-your-writes, write position, metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgenode.analysis import StatementAnalyzer
from edgenode.hrana.backend import Backend
from edgenode.pragmas import PragmaReport
from edgenode.results import ChangeListener, Params, QueryResult, Statement, WritePosition, WriteResult
from edgenode.sessions import LoopBridge

if TYPE_CHECKING:
    from edgenode.idempotency import KeyedWrite

log = logging.getLogger(__name__)


class Connections(Backend):
    """Opens the database side of protocol streams (Hrana sessions: reads, writes, transactions).

    Sessions run in the protocol server's worker threads; `bridge` takes them to the event loop."""

    open_session_blocks = False

    def __init__(self) -> None:
        self.bridge = LoopBridge()

    async def start(self) -> None:
        self.bridge.attach(asyncio.get_running_loop())

    async def stop(self) -> None:
        """Called after every session is closed."""
        return None


class Database(ABC):
    role: str
    path: Path
    pragma_report: PragmaReport | None = None
    analyzer: StatementAnalyzer | None = None  # the schema mirror statements are analyzed against

    def __init__(self) -> None:
        self._listeners: list[ChangeListener] = []

    # -- change listeners ------------------------------------------------------------------------

    def add_change_listener(self, callback: ChangeListener) -> None:
        """`callback` is awaited after every local commit (standalone) or applied sync (replica)."""
        self._listeners.append(callback)

    async def notify_changed(self) -> None:
        for callback in list(self._listeners):
            try:
                await callback()
            except Exception:
                log.exception("change listener failed")

    def may_have_table(self, name: str) -> bool:
        """False only when the schema as the node last read it has no table `name`; no I/O (the
        analyzer's mirror). The node rereads the schema after every schema change it commits and,
        on a replica, after a sync that brings one: change listeners use this to skip, after every
        write, reading the definitions of a kind of collection nobody defined."""
        analyzer = self.analyzer
        return analyzer is None or analyzer.has_table(name)

    # -- lifecycle -------------------------------------------------------------------------------

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def not_ready_reason(self) -> str | None:
        """Why the node should not take traffic now (/ready answers 503 with it), else None."""

    # -- data ------------------------------------------------------------------------------------

    @abstractmethod
    async def read(
        self, sql: str, params: Params = None, *, max_rows: int | None = None, timeout_ms: int | None = None
    ) -> QueryResult:
        """One read-only statement."""

    @abstractmethod
    async def write(self, statements: Sequence[Statement], keyed: KeyedWrite | None = None) -> WriteResult:
        """Statements in one transaction, all or nothing; the result says where the write is visible.
        With `keyed`, at most once per key (edgenode.idempotency): a key already recorded returns its
        recorded results, applies nothing and says `replayed`."""

    @abstractmethod
    def connections(self, *, lease_timeout: float) -> Connections:
        """The session maker protocol streams use. `lease_timeout`: how long a statement waits for a
        connection held by another stream's transaction."""

    # -- freshness -------------------------------------------------------------------------------

    @abstractmethod
    async def wait_fresh(
        self, min_frame: int | None, max_staleness_ms: int | None, min_generation: int | None = None
    ) -> None:
        """Return once reads reflect the bound (a replica waits, bounded, for a sync), else raise Unavailable."""

    def feed_bound(self) -> int | None:
        """The highest change-feed seq (`_edgenode_changes`) consumers may read, None for no bound.
        A local-first replica bounds it at the synced head: later rows are speculative local writes."""
        return None

    def backup_hold(self) -> AbstractAsyncContextManager[Any]:
        """Held while an online backup copies the database file (`backup_http`). A local-first replica
        holds its pulls meanwhile: a pull cuts the WAL frames the backup's snapshot is reading."""
        return contextlib.nullcontext()

    @abstractmethod
    def position(self) -> WritePosition:
        """Where this node's data is now (generation and frame of a replica)."""

    # -- reporting -------------------------------------------------------------------------------

    @abstractmethod
    def status(self) -> dict[str, Any]: ...

    @abstractmethod
    async def migration_status(self) -> list[dict[str, Any]]: ...
