"""`POST /api/v1/backup`: a running node or primary backs its database up into `DATA_DIR/backups/`.

The route needs the read-write token. The file name is the caller's choice within that directory
only: a token holder must not be able to write anywhere the process can. One backup runs at a time,
on a worker thread (apsw releases the GIL while it copies). `BackupService` is the one
implementation; the node mounts it as a component, the primary's app as one more route.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from edgenode import bodies
from edgenode.api.component import Component
from edgenode.api.errors import ApiError, body_error
from edgenode.api.routing import write_route
from edgenode.backup import REPLICA, STANDALONE, BackupError, BackupReport, BackupRequest, backup
from edgenode.config import Settings
from edgenode.database import Database
from edgenode.encryption import Secret, load_key

BACKUP_DIR = "backups"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BackupRefused(Exception):
    """A request the service refuses (bad name, one already running, the backup failed)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class BackupService:
    def __init__(
        self, data_dir: Path, kind: str, primary_position: Callable[[], tuple[int, int] | None] | None = None
    ) -> None:
        self.directory = data_dir / BACKUP_DIR
        self.data_dir = data_dir
        self.kind = kind
        self.primary_position = primary_position
        self.key: Secret | None = None  # an encrypted node's key: its backups are encrypted with it
        # Held around the copy (`Database.backup_hold`): a local-first replica's pulls wait for it.
        self.hold: Callable[[], AbstractAsyncContextManager[Any]] = contextlib.nullcontext
        self._running = asyncio.Lock()
        self.last: BackupReport | None = None

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"running": self._running.locked()}
        if self.last is not None:
            status.update(last_path=self.last.path, last_snapshot_at=self.last.snapshot_at, last_bytes=self.last.bytes)
        return status

    async def run(self, request: Request) -> BackupReport:
        """Raises bodies.BodyError for a bad body, BackupRefused for the rest it refuses."""
        raw = await bodies.read(request, 64 * 1024)  # a file name; the primary has no body limit of its own
        content_type = request.headers.get("content-type")
        spec = bodies.decode(raw, BackupRequest, content_type) if raw.strip() else BackupRequest()
        name = spec.name
        if name is not None and (not _NAME.match(name) or name.endswith((".partial", "-journal", "-wal", "-shm"))):
            raise BackupRefused(
                400,
                "bad_request",
                "name: a plain file name of 1 to 128 letters, digits, '.', '_', '-' within DATA_DIR/backups/ "
                "(leave it out for a timestamped one)",
            )
        if self._running.locked():
            raise BackupRefused(409, "backup_running", "a backup is already running; retry when it has finished")
        async with self._running:
            dest = self.directory / (name or self._default_name())
            if dest.exists():
                raise BackupRefused(409, "exists", f"{dest} already exists; choose another name")
            try:
                async with self.hold():
                    report = await asyncio.to_thread(self._backup, dest)
            except BackupError as exc:
                raise BackupRefused(503, "backup_failed", str(exc)) from exc
            self.last = report
        return report

    def _default_name(self) -> str:
        """A timestamped name no earlier backup has: two unnamed backups in one second used to get
        409 'already exists; choose another name' for a name the caller never chose."""
        stamp = f"{self.kind}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        name, n = f"{stamp}.db", 1
        while (self.directory / name).exists():
            n += 1
            name = f"{stamp}-{n}.db"
        return name

    def _backup(self, dest: Path) -> BackupReport:
        self.directory.mkdir(exist_ok=True)
        return backup(
            self.data_dir,
            dest,
            kind=self.kind,
            primary_position=self.primary_position,
            key=self.key,
            pulls_held=True,  # run inside `self.hold()`
        )


class BackupComponent(Component):
    name = "backup"

    def __init__(self, settings: Settings, db: Database) -> None:
        self.service = BackupService(settings.data_path, REPLICA if db.role == REPLICA else STANDALONE)
        self.service.key = None if db.role == REPLICA else load_key(settings)
        self.service.hold = db.backup_hold

    def routes(self) -> list[BaseRoute]:
        return [write_route("/api/v1/backup", self.handle, methods=["POST"])]

    def status(self) -> dict[str, Any]:
        return self.service.status()

    async def handle(self, request: Request) -> Response:
        try:
            report = await self.service.run(request)
        except bodies.BodyError as exc:
            raise body_error(exc) from None
        except BackupRefused as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        return Response(msgspec.json.encode(report.as_dict()), media_type="application/json")
