"""The database of an HTTP worker process: a standalone node's reads, from the worker's own readers.

`ReadOnlyLocalDatabase` is `LocalDatabase` without its writer: it never opens the file for writing
(the owner process is its one writer) and builds its schema mirror on a reader. Only reads reach
it (`dispatch.py` forwards everything else to the owner); a write that got here anyway is refused,
never run. Before each request it answers, `dispatch.py` has it follow the owner's schema version (`epoch.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from edgenode import engine
from edgenode.analysis import StatementAnalyzer
from edgenode.errors import Unavailable
from edgenode.http_workers.epoch import SchemaEpoch
from edgenode.idempotency import KeyedWrite
from edgenode.owner import ProcessOwner
from edgenode.pragmas import Profile
from edgenode.results import Statement, WriteResult
from edgenode.standalone import LocalDatabase


def _refuse() -> NoReturn:
    raise Unavailable("an HTTP worker process does not write; the owner process does (this is a bug)")


class ReadOnlyLocalDatabase(LocalDatabase):
    role = "standalone"

    def __init__(self, data_dir: Path, profile: Profile, epoch: SchemaEpoch, **options: Any) -> None:
        super().__init__(data_dir, profile, migrate=False, **options)
        self.epoch = epoch

    async def start(self) -> None:
        await self.readers.start()
        version, schema = await self.readers.call(self.timeout_ms / 1000, engine.read_versioned_schema)
        self._schema_version = version
        self.analyzer = StatementAnalyzer(lambda: schema)
        self.started = True

    async def stop(self) -> None:
        self.started = False
        await self.readers.stop()

    async def refresh_schema(self) -> None:
        version, schema = await self.readers.call(self.timeout_ms / 1000, engine.read_versioned_schema)
        analyzer = self.analyzer
        if analyzer is not None:
            analyzer._schema = lambda: schema
            await asyncio.to_thread(analyzer.refresh)
        self._schema_version = version
        self.schema_refreshes += 1

    def behind_owner(self) -> bool:
        """Whether the owner published a newer schema than this mirror's (a memory read)."""
        # Newer only: a mirror rebuilt here after a "no such table" may be ahead of the owner's.
        return self._schema_version is None or self.epoch.read() > self._schema_version

    async def migration_status(self) -> list[dict[str, Any]]:
        _refuse()

    async def write(self, statements: Sequence[Statement], keyed: KeyedWrite | None = None) -> WriteResult:
        _refuse()

    async def commit_statement(self, *args: Any) -> tuple[bool, Any]:
        _refuse()

    @contextlib.asynccontextmanager
    async def lease_writer(self) -> AsyncIterator[ProcessOwner]:
        _refuse()
        yield  # pragma: no cover
