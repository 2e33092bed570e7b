"""`POST /api/v1/backup`: a running node backs its database up into `DATA_DIR/backups/`.

The route needs the read-write token (every non-read POST does). The file name is the caller's
choice within that directory only: a token holder must not be able to write anywhere the process
can. One backup runs at a time; it runs on a worker thread (apsw releases the GIL while it copies).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from edgenode.api.errors import ApiError, decode
from edgenode.backup import REPLICA, STANDALONE, BackupError, BackupReport, backup
from edgenode.config import Settings
from edgenode.database import Database

BACKUP_DIR = "backups"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class BackupRequest(msgspec.Struct, forbid_unknown_fields=True):
    # A file name inside DATA_DIR/backups/ (default: <role>-<UTC time>.db).
    name: str | None = None


class BackupComponent:
    name = "backup"

    def __init__(self, settings: Settings, db: Database) -> None:
        self.data_dir = settings.data_path
        self.db = db
        self._running = asyncio.Lock()
        self.last: BackupReport | None = None

    def routes(self) -> list[BaseRoute]:
        return [Route("/api/v1/backup", self.handle, methods=["POST"])]

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def not_ready_reason(self) -> str | None:
        return None

    def status(self) -> dict[str, Any]:
        if self.last is None:
            return {"running": self._running.locked()}
        return {
            "running": self._running.locked(),
            "last_path": self.last.path,
            "last_snapshot_at": self.last.snapshot_at,
            "last_bytes": self.last.bytes,
        }

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        spec = decode(body, BackupRequest) if body.strip() else BackupRequest()
        role = self.db.role
        name = spec.name or f"{role}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.db"
        if not _NAME.match(name) or name.endswith((".partial", "-journal")):
            raise ApiError(
                400,
                "bad_request",
                "name: a plain file name (letters, digits, '.', '_', '-'), written in DATA_DIR/backups/",
            )
        if self._running.locked():
            raise ApiError(409, "backup_running", "a backup is already running; retry when it has finished")
        async with self._running:
            directory = self.data_dir / BACKUP_DIR
            dest = directory / name
            if dest.exists():
                raise ApiError(409, "exists", f"{dest} already exists; choose another name")
            kind = REPLICA if role == REPLICA else STANDALONE
            try:
                report = await asyncio.to_thread(_run, self.data_dir, directory, dest, kind)
            except BackupError as exc:
                raise ApiError(503, "backup_failed", str(exc)) from exc
            self.last = report
        return Response(msgspec.json.encode(report.as_dict()), media_type="application/json")


def _run(data_dir: Path, directory: Path, dest: Path, kind: str) -> BackupReport:
    directory.mkdir(exist_ok=True)
    return backup(data_dir, dest, kind=kind)
