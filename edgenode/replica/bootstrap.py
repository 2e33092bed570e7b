"""Bootstrap: download a generation's database file from the primary, with progress, resumable.

The libsql client can bootstrap by itself (`GET /export/G` inside `connect()`), but it holds the
Python GIL for the whole download, shows no progress and starts over when interrupted. So the
node downloads `/export/G` itself into `replica-bootstrap/export.partial`, resuming with an HTTP
Range request when the primary supports it (else it starts over and says so), verifies the file,
and then places it with a `-info` file the client accepts (generation G, frame 0). The client's
first sync then pulls the generation's frames.

Speed (bench/sync.py times each phase): the body is read by `http.client` in a worker thread,
1 MiB per call straight from the socket into one reused buffer, not through httpx's 64 KiB async
pieces; a second thread fdatasyncs every 32 MiB so writeback overlaps the transfer and the fsync
before the rename finds little left. Cancelling the download shuts its socket down and waits for
the thread, which keeps every byte it wrote for the next attempt."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import logging
import os
import socket
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import apsw
import httpx
import msgspec

from edgenode.durable import atomic_write, fsync_dir
from edgenode.replica.files import Position, ReplicaFiles
from edgenode.sync_protocols import WrongProtocol, is_turso_sync_server, turso_sync_server_message
from edgenode.tls import client_context

log = logging.getLogger("edgenode.replica")

PAGE_SIZE = 4096
CHUNK = 1 << 20
FLUSH_EVERY = 32 << 20
EXPORT_TIMEOUT = 30.0  # per read, not for the whole body: the primary may first wait on its lock
PARTIAL = "export.partial"
STATE = "export.json"


class BootstrapError(Exception):
    """The download failed; a later attempt resumes from what was kept."""


class PrimaryRefused(BootstrapError):
    """The primary refused this node's credentials (401/403): retrying will not help until they change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
    if response.status_code in (401, 403):
        raise PrimaryRefused(response.status_code, f"GET /info answered {response.status_code}: {response.text[:200]}")
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
    """Fetch /export/{generation} into the staging directory; returns the complete, verified file.

    `http` carries the node's credentials; the body itself is read in a worker thread
    by the standard library's blocking client (see `_fetch`)."""
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
    request = _ExportRequest(
        url=f"{url}/export/{generation}",
        authorization=http.headers.get("authorization"),
        timeout=EXPORT_TIMEOUT,
        generation=generation,
    )
    stop = _Stop()
    fetch = asyncio.ensure_future(asyncio.to_thread(_fetch, request, partial, offset, progress, stop))
    try:
        total = await asyncio.shield(fetch)
    except asyncio.CancelledError:
        # The thread stops at once and keeps what arrived, for the next attempt; waiting for it means
        # no later attempt in this process can write the same file while it still does.
        stop.set()
        with contextlib.suppress(Exception):
            await fetch
        raise
    size = partial.stat().st_size
    if total is not None and size != total:
        raise BootstrapError(
            f"download of generation {generation} ended at {size} of {total} bytes; the next attempt resumes there"
        )
    progress.phase = "verifying"
    await asyncio.to_thread(verify, partial)
    return partial


class _Stop:
    """Stops a download thread: a flag it checks between chunks, and its socket shut down so that a
    read blocked on a slow or silent primary returns now rather than after the timeout."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def watch(self, sock: socket.socket | None) -> None:
        with self._lock:
            self._sock = sock
            if self._event.is_set():
                self._shutdown()

    def set(self) -> None:
        with self._lock:
            self._event.set()
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True)
class _ExportRequest:
    url: str
    authorization: str | None
    timeout: float
    generation: int


def _connection(request: _ExportRequest) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """The connection for the export, its request target and the proxy's headers.

    A proxy named by the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY: what httpx,
    which the node's other requests use, and curl honour) is used the same way here: https goes
    through a CONNECT tunnel, http asks the proxy for the absolute URL."""
    parts = urlsplit(request.url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy_for(parts.scheme, parts.hostname or "")
    if proxy is None:
        if parts.scheme == "https":
            return (
                http.client.HTTPSConnection(parts.netloc, timeout=request.timeout, context=client_context()),
                target,
                {},
            )
        return http.client.HTTPConnection(parts.netloc, timeout=request.timeout), target, {}
    hop = urlsplit(proxy)
    auth: dict[str, str] = {}
    if hop.username:
        user_pass = f"{unquote(hop.username)}:{unquote(hop.password or '')}".encode()
        auth["proxy-authorization"] = "Basic " + base64.b64encode(user_pass).decode()
    if parts.scheme == "https":
        tunnel = http.client.HTTPSConnection(
            hop.hostname or "", hop.port or 80, timeout=request.timeout, context=client_context()
        )
        tunnel.set_tunnel(parts.hostname or "", parts.port or 443, headers=auth)
        return tunnel, target, {}
    return http.client.HTTPConnection(hop.hostname or "", hop.port or 80, timeout=request.timeout), request.url, auth


def _proxy_for(scheme: str, host: str) -> str | None:
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass_environment(host, proxies):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    if not proxy.startswith("http://"):
        raise BootstrapError(
            f"the proxy {proxy.split('://')[0]}:// is not supported for the download; name an http:// proxy"
        )
    return proxy


def _fetch(request: _ExportRequest, partial: Path, offset: int, progress: Progress, stop: _Stop) -> int | None:
    """GET the export (from `offset` with a Range request) into `partial`; returns the file's total size.

    Why not httpx: it reads the body in 64 KiB pieces through five Python layers (~250 µs each),
    which held a 1 GB bootstrap to a third of disk speed. `readinto` fills a reused 1 MiB buffer
    in C straight from the socket, and pwrite/fsync release the GIL, so the node's event loop
    keeps serving while the body streams."""
    connection, target, headers = _connection(request)
    if request.authorization:
        headers["authorization"] = request.authorization
    if offset:
        headers["range"] = f"bytes={offset}-"
    generation = request.generation
    try:
        connection.request("GET", target, headers=headers)
        stop.watch(connection.sock)
        response = connection.getresponse()
        status = response.status
        if status in (404, 410):
            body = response.read(200).decode(errors="replace")
            raise GenerationGone(f"generation {generation} is not exported any more: {body}")
        if status == 416 and offset:
            # The partial file is already complete (or longer than the file): verify it as is.
            return offset
        if status not in (200, 206):
            body = response.read(200).decode(errors="replace")
            raise BootstrapError(f"GET /export/{generation} answered {status}: {body}")
        if status == 200 and offset:
            log.info("the primary does not resume downloads (no Range support); starting over")
            progress.restarted += 1
            offset = 0
        total = _total_size(status, response.getheader("content-range", ""), response.getheader("content-length"))
        progress.bytes_total = total
        progress.bytes_done = progress.resumed_from = offset
        if offset:
            log.info("resuming the download of generation %d at %d of %s bytes", generation, offset, total)
        _receive(response, partial, offset, progress, stop)
        return total
    except (OSError, http.client.HTTPException) as exc:
        if stop.is_set():
            raise BootstrapError(f"download of generation {generation} stopped") from exc
        done = progress.bytes_done
        raise BootstrapError(
            f"download of generation {generation} broke off at {done} bytes ({type(exc).__name__}: {exc}); "
            "the next attempt resumes there"
        ) from exc
    finally:
        connection.close()


def _total_size(status: int, content_range: str, content_length: str | None) -> int | None:
    if status == 206:
        total = content_range.rsplit("/", 1)[-1]
        return int(total) if total.isdigit() else None
    return int(content_length) if content_length and content_length.isdigit() else None


def _receive(response: http.client.HTTPResponse, partial: Path, offset: int, progress: Progress, stop: _Stop) -> None:
    """Write the body at `offset` on. Every FLUSH_EVERY bytes a second thread starts an fdatasync,
    so the disk writes while the network delivers: with the whole file left dirty in the page cache
    (a node with RAM to spare starts no writeback of its own), the final fsync alone took as long
    as a plain copy of the file."""
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o644)
    position = offset
    buffer = memoryview(bytearray(CHUNK))
    flusher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bootstrap-flush")
    flushing: Future[None] | None = None
    flushed_to = offset
    try:
        os.ftruncate(fd, offset)
        while not stop.is_set():
            received = response.readinto(buffer)
            if not received:
                break
            written = 0
            while written < received:
                written += os.pwrite(fd, buffer[written:received], position + written)
            position += received
            progress.bytes_done = position
            if position - flushed_to >= FLUSH_EVERY and (flushing is None or flushing.done()):
                flushing = flusher.submit(os.fdatasync, fd)
                flushed_to = position
    finally:
        # Whatever arrived before an interruption is kept, so the next attempt resumes after it.
        flusher.shutdown(wait=True)
        os.fsync(fd)
        os.close(fd)


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
