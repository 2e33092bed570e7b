"""Bootstrap: download a generation's database file from the primary, with progress, resumable.

The libsql client can bootstrap by itself (`GET /export/G` inside `connect()`), but it holds the
Python GIL for the whole download, shows no progress and starts over when interrupted. So the
node downloads `/export/G` itself into `replica-bootstrap/export.partial`, resuming with an HTTP
Range request when the primary supports it (else it starts over and says so), verifies the file,
and then places it with a `-info` file the client accepts (generation G, frame 0). The client's
first sync then pulls the generation's frames.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import httpx
import msgspec

from edgenode.durable import atomic_write, fsync_dir
from edgenode.replica.files import Position, ReplicaFiles
from edgenode.sync_protocols import WrongProtocol, is_turso_sync_server, turso_sync_server_message

log = logging.getLogger("edgenode.replica")

PAGE_SIZE = 4096
CHUNK = 1 << 20
PARTIAL = "export.partial"
STATE = "export.json"


class BootstrapError(Exception):
    """The download failed; a later attempt resumes from what was kept."""


class GenerationGone(BootstrapError):
    """The primary no longer exports that generation (it moved on): ask /info again."""


class PartialState(msgspec.Struct):
    primary_url: str
    generation: int
    total: int | None = None


@dataclass
class Progress:
    """What `/api/v1/status` shows while a bootstrap runs."""

    generation: int | None = None
    bytes_total: int | None = None
    bytes_done: int = 0
    resumed_from: int = 0
    restarted: int = 0
    started_at: float = field(default_factory=time.monotonic)
    frames_applied: int | None = None
    phase: str = "starting"

    def as_dict(self) -> dict[str, Any]:
        elapsed = max(time.monotonic() - self.started_at, 1e-6)
        fresh = self.bytes_done - self.resumed_from
        rate = fresh / elapsed if fresh > 0 else None
        eta = None
        if rate and self.bytes_total is not None:
            eta = round(max(self.bytes_total - self.bytes_done, 0) / rate, 1)
        return {
            "phase": self.phase,
            "generation": self.generation,
            "bytes_total": self.bytes_total,
            "bytes_done": self.bytes_done,
            "resumed_from_bytes": self.resumed_from,
            "restarted_downloads": self.restarted,
            "bytes_per_second": round(rate) if rate else None,
            "eta_seconds": eta,
            "frames_applied": self.frames_applied,
            "elapsed_seconds": round(elapsed, 3),
        }


async def primary_info(http: httpx.AsyncClient, url: str) -> dict[str, Any]:
    response = await http.get(f"{url}/info")
    if response.status_code == 404 and await is_turso_sync_server(http, url):
        raise WrongProtocol(turso_sync_server_message(url))
    if response.status_code != 200:
        raise BootstrapError(f"GET /info answered {response.status_code}: {response.text[:200]}")
    info = msgspec.json.decode(response.content)
    if not isinstance(info, dict) or not isinstance(info.get("current_generation"), int):
        raise BootstrapError(f"GET /info answered an unexpected body: {response.text[:200]}")
    return info


def _load_state(files: ReplicaFiles) -> PartialState | None:
    try:
        return msgspec.json.decode((files.staging / STATE).read_bytes(), type=PartialState)
    except (OSError, msgspec.DecodeError):
        return None


def clear_staging(files: ReplicaFiles) -> None:
    for name in (PARTIAL, STATE):
        (files.staging / name).unlink(missing_ok=True)


async def download(http: httpx.AsyncClient, url: str, generation: int, files: ReplicaFiles, progress: Progress) -> Path:
    """Fetch /export/{generation} into the staging directory; returns the complete, verified file."""
    staging = files.staging
    await asyncio.to_thread(staging.mkdir, parents=True, exist_ok=True)
    partial = staging / PARTIAL
    state = _load_state(files)
    offset = 0
    if state is not None and state.primary_url == url and state.generation == generation and partial.exists():
        offset = partial.stat().st_size
    else:
        await asyncio.to_thread(clear_staging, files)
        await asyncio.to_thread(atomic_write, staging / STATE, msgspec.json.encode(PartialState(url, generation)))
    progress.generation = generation
    progress.phase = "downloading"
    headers = {"range": f"bytes={offset}-"} if offset else {}
    async with http.stream("GET", f"{url}/export/{generation}", headers=headers, timeout=httpx.Timeout(30.0)) as r:
        if r.status_code in (404, 410):
            body = (await r.aread())[:200].decode(errors="replace")
            raise GenerationGone(f"generation {generation} is not exported any more: {body}")
        if r.status_code == 416 and offset:
            # The partial file is already complete (or longer than the file): verify it as is.
            total = offset
        elif r.status_code not in (200, 206):
            body = (await r.aread())[:200].decode(errors="replace")
            raise BootstrapError(f"GET /export/{generation} answered {r.status_code}: {body}")
        else:
            if r.status_code == 200 and offset:
                log.info("the primary does not resume downloads (no Range support); starting over")
                progress.restarted += 1
                offset = 0
            total = _total_size(r)
            progress.bytes_total = total
            progress.bytes_done = progress.resumed_from = offset
            if offset:
                log.info("resuming the download of generation %d at %d of %s bytes", generation, offset, total)
            await _receive(r, partial, offset, progress)
    size = partial.stat().st_size
    if total is not None and size != total:
        raise BootstrapError(f"download of generation {generation} ended at {size} of {total} bytes")
    progress.phase = "verifying"
    await asyncio.to_thread(verify, partial)
    return partial


def _total_size(response: httpx.Response) -> int | None:
    if response.status_code == 206:
        content_range = response.headers.get("content-range", "")
        total = content_range.rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else None
    length = response.headers.get("content-length")
    return int(length) if length and length.isdigit() else None


async def _receive(response: httpx.Response, partial: Path, offset: int, progress: Progress) -> None:
    fd = await asyncio.to_thread(os.open, partial, os.O_WRONLY | os.O_CREAT, 0o644)
    position = offset
    buffer = bytearray()

    async def flush() -> None:
        nonlocal position
        if buffer:
            await asyncio.to_thread(os.pwrite, fd, bytes(buffer), position)
            position += len(buffer)
            progress.bytes_done = position
            buffer.clear()

    try:
        await asyncio.to_thread(os.ftruncate, fd, offset)
        async for chunk in response.aiter_bytes():
            buffer += chunk
            if len(buffer) >= CHUNK:
                await flush()
    finally:
        # Whatever arrived before an interruption is kept, so the next attempt resumes after it.
        await flush()
        await asyncio.to_thread(os.fsync, fd)
        await asyncio.to_thread(os.close, fd)


def verify(path: Path) -> None:
    """A whole SQLite database with 4096-byte pages whose header matches its size, passing quick_check.

    Opened with apsw as immutable and read-only: this file is not the replica yet, nothing else has it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(100)
    if len(header) < 100 or header[:16] != b"SQLite format 3\x00":
        raise BootstrapError("the downloaded file is not a SQLite database")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    if page_size != PAGE_SIZE:
        raise BootstrapError(f"the downloaded database has {page_size}-byte pages; the sync protocol needs 4096")
    if size % PAGE_SIZE:
        raise BootstrapError(f"the downloaded file has {size} bytes, not a whole number of pages")
    change_counter, valid_for = header[24:28], header[92:96]
    pages = int.from_bytes(header[28:32], "big")
    if change_counter == valid_for and pages and pages * PAGE_SIZE != size:
        raise BootstrapError(f"the database header says {pages} pages but the file holds {size // PAGE_SIZE}")
    conn = apsw.Connection(f"file:{path}?immutable=1", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        result = [row[0] for row in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()
    if result != ["ok"]:
        raise BootstrapError(f"the downloaded database fails quick_check: {'; '.join(map(str, result[:5]))}")


def place(files: ReplicaFiles, partial: Path, generation: int, write_identity: Callable[[], None]) -> None:
    """Make the verified download the replica. Runs with the replica connection closed.

    Order: wipe (identity first), move the file in, write `-info`, write the identity last. A crash
    anywhere leaves either the old replica, or a directory without identity that the next start
    wipes; never a replica that claims progress it does not have."""
    files.wipe()
    os.replace(partial, files.db)
    fsync_dir(files.dir)
    files.write_info(Position(generation, 0))
    write_identity()
    clear_staging(files)
    fsync_dir(files.staging)
