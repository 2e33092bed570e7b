"""The primary's HTTP app: the libSQL sync endpoints, Hrana, health and metrics.

Sync endpoints never answer 500: the clients do not retry it and parse its body as JSON. Anything
unexpected there becomes 503, which they retry with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from edgenode import bodies
from edgenode.api import openapi
from edgenode.auth import Access, Authenticator, AuthError
from edgenode.backup import PRIMARY, BackupReport, BackupRequest
from edgenode.backup_http import BackupRefused, BackupService
from edgenode.config import Settings
from edgenode.origins import OriginGuard
from edgenode.primary import DATABASE_ID_HEADER
from edgenode.primary.archive import Archiver, archive_from_settings
from edgenode.primary.generations import (
    LOCK_TIMEOUT,
    BadRequest,
    CheckpointNeeded,
    Frames,
    Gone,
    NotFound,
    PrimaryStore,
    PushReply,
)
from edgenode.primary.wal import FRAME_SIZE
from edgenode.rwlock import LockTimeout
from edgenode.sync_protocols import PRIMARY_REFUSES_TURSO_SYNC, TURSO_SYNC_PATHS

log = logging.getLogger("edgenode.primary")
T = TypeVar("T")

MAX_WAIT_MS = 30_000
MAX_PUSH_FRAMES = 1024
EXPORT_CHUNK = 1 << 20


class CheckpointNeededBody(msgspec.Struct):
    status: str
    generation: int
    max_frame_no: int
    baton: None = None


class ErrorBody(msgspec.Struct):
    error: str


class HealthBody(msgspec.Struct):
    status: str
    generation: int


class ArchiveStatus(msgspec.Struct):
    """The continuous archive (`--archive`): what is shipped and how far behind it is."""

    target: str
    generation: int
    frame: int
    lag_seconds: float
    recent_lag_p50_seconds: float | None
    recent_lag_p99_seconds: float | None
    last_shipped_at: float | None
    last_snapshot_generation: int | None
    last_error: str | None
    segments: int
    frames: int
    bytes: int
    snapshots: int  # held by the archive now (read back on start), not only this run's
    snapshots_shipped: int
    deleted: int
    merged: int  # compaction: merged segments written, and small ones deleted after it
    merged_away: int


class InfoBody(msgspec.Struct):
    current_generation: int
    database_id: str | None
    archive: ArchiveStatus | None = None


class RolloverBody(msgspec.Struct):
    generation: int


def json_response(body: Any, status: int = 200) -> Response:
    # Exactly "application/json": the JS client compares the content type byte for byte.
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


# Not Implemented: the server knows the request and does not serve that protocol (a client error
# status would suggest the request is malformed; Turso Sync clients do not retry 501).
TURSO_SYNC_STATUS = 501


def error_body(path: str, code: str, message: str) -> bytes:
    """An error answered outside the routes: sync clients read "error", Hrana clients "message" and
    "code" (the primary serves both)."""
    return msgspec.json.encode({"error": message, "message": message, "code": code.upper()})


def error_response(status: int, message: str) -> Response:
    return json_response(ErrorBody(message), status)


class Metrics:
    def __init__(self, store: PrimaryStore, archiver: Archiver | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames_served = Counter("edgenode_primary_frames_served", "WAL frames served to pulls", registry=r)
        self.bytes_exported = Counter("edgenode_primary_bytes_exported", "Bytes of /export bodies sent", registry=r)
        self.sync_requests = Counter(
            "edgenode_primary_sync_requests", "Sync endpoint requests", ["endpoint", "status"], registry=r
        )
        self.push_conflicts = Counter("edgenode_primary_push_conflicts", "Pushes answered with conflict", registry=r)
        self.hrana_requests = Counter(
            "edgenode_primary_hrana_requests", "Hrana requests by endpoint", ["endpoint"], registry=r
        )
        self.hrana_errors = Counter(
            "edgenode_primary_hrana_errors", "Hrana statement errors by code", ["code"], registry=r
        )
        generation = Gauge("edgenode_primary_generation", "Current generation", registry=r)
        generation.set_function(lambda: store.generation)
        rollovers = Gauge("edgenode_primary_rollovers", "Generation rollovers since start", registry=r)
        rollovers.set_function(lambda: store.stats["rollovers"])
        # Each is one fsync of the WAL: with group commit (a node's write combiner) fewer than writes.
        commits = Gauge("edgenode_primary_commits", "Transactions committed here since start", registry=r)
        commits.set_function(lambda: store.stats["commits"])
        if archiver is not None:
            lag = Gauge(
                "edgenode_primary_archive_lag_seconds",
                "Seconds since the oldest commit not yet in the archive (0: all shipped)",
                registry=r,
            )
            lag.set_function(archiver.lag)
            shipped = Gauge("edgenode_primary_archive_frames", "WAL frames shipped to the archive", registry=r)
            shipped.set_function(lambda: archiver.stats["frames"])


class CommitNotifier:
    """Wakes async waiters when a commit lands (the hook for long-polling pulls).

    Listeners are called from whatever thread committed, so the wake-up hops onto the loop."""

    def __init__(self) -> None:
        self.latest: tuple[int, int] = (0, 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def on_commit(self, generation: int, frames: int) -> None:
        self.latest = (generation, frames)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    def next_commit(self) -> asyncio.Event:
        """An event set by the next commit. Take it *before* looking at the store, so a commit that
        lands in between is not missed."""
        return self._event

    @staticmethod
    async def wait(event: asyncio.Event, seconds: float) -> None:
        """Return once event is set or after `seconds`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), seconds)


class Workers:
    """Two thread pools, so work that may wait on the store's lock (pulls, pushes, rollovers) can
    never occupy the threads an export needs to finish streaming and release its shared lock
    (with one shared pool, blocked pulls would starve the export a waiting rollover waits for)."""

    def __init__(self) -> None:
        self.locking = ThreadPoolExecutor(max_workers=32, thread_name_prefix="primary-sync")
        self.io = ThreadPoolExecutor(max_workers=4, thread_name_prefix="primary-io")

    async def run(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.locking, func, *args)

    async def run_io(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.io, func, *args)

    def shutdown(self) -> None:
        self.locking.shutdown(wait=False, cancel_futures=True)
        self.io.shutdown(wait=False, cancel_futures=True)


class ExportResponse(Response):
    """Streams a generation's base file while holding the shared lock, released on any exit,
    including a client that goes away mid-body (a rollover must not wait on a dead download)."""

    def __init__(self, store: PrimaryStore, generation: int, metrics: Metrics, workers: Workers) -> None:
        super().__init__(media_type="application/octet-stream")
        self.workers = workers
        self.store = store
        self.generation = generation
        self.metrics = metrics

    async def _acquire(self) -> None:
        lock = self.store.lock
        future = asyncio.get_running_loop().run_in_executor(self.workers.locking, lock.acquire_shared, LOCK_TIMEOUT)
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The client left while we waited; the thread may still get the lock, so give it back then.
            def release_if_taken(f: asyncio.Future[None]) -> None:
                if not f.cancelled() and f.exception() is None:
                    lock.release_shared()

            future.add_done_callback(release_if_taken)
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        store = self.store
        try:
            await self._acquire()
        except LockTimeout as exc:
            self.metrics.sync_requests.labels("export", "503").inc()
            await error_response(503, str(exc))(scope, receive, send)
            return
        try:
            try:
                size = store.export_size(self.generation)
            except NotFound as exc:
                status = 410 if self.generation < store.generation else 404
                self.metrics.sync_requests.labels("export", str(status)).inc()
                await error_response(status, str(exc))(scope, receive, send)
                return
            except Exception as exc:
                log.exception("export failed")
                self.metrics.sync_requests.labels("export", "503").inc()
                await error_response(503, f"temporarily unavailable: {exc}")(scope, receive, send)
                return
            start = _range_start(scope)
            if start is not None and start >= size:
                self.metrics.sync_requests.labels("export", "416").inc()
                await Response(status_code=416, headers={"content-range": f"bytes */{size}"})(scope, receive, send)
                return
            status = 200 if start is None else 206
            offset = start or 0
            self.metrics.sync_requests.labels("export", str(status)).inc()
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", str(size - offset).encode()),
                (b"accept-ranges", b"bytes"),
            ]
            if start is not None:
                # A replica resuming an interrupted bootstrap: the rest of the same base file.
                headers.append((b"content-range", f"bytes {start}-{size - 1}/{size}".encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            while offset < size:
                # Through the store's own descriptor: closing one of ours would drop SQLite's locks.
                chunk = await self.workers.run_io(store.read_base, offset, min(EXPORT_CHUNK, size - offset))
                if not chunk:
                    break
                offset += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": offset < size})
                self.metrics.bytes_exported.inc(len(chunk))
            if offset < size:
                raise OSError(f"database file shrank while exporting ({offset} of {size} bytes)")
        finally:
            store.lock.release_shared()


def _range_start(scope: Scope) -> int | None:
    """`Range: bytes=N-`, what a resuming replica sends; any other form is served whole (200)."""
    for key, value in scope["headers"]:
        if key == b"range":
            text = value.decode("latin-1").strip()
            if text.startswith("bytes=") and text.endswith("-") and text[6:-1].isdigit():
                return int(text[6:-1])
    return None


def create_app(settings: Settings, *, store: PrimaryStore | None = None) -> Starlette:
    store = store or PrimaryStore(
        Path(settings.data_dir),
        generation_max_frames=settings.generation_max_frames,
        keep_generations=settings.keep_generations,
    )
    authenticator = Authenticator.from_settings(settings.auth_token, settings.read_token, settings.jwt_key_file)
    archiver = archive_from_settings(store, settings)
    metrics = Metrics(store, archiver)
    notifier = CommitNotifier()
    workers = Workers()
    store.add_commit_listener(notifier.on_commit)

    def authorize(request: Request, write: bool = False) -> Access | Response:
        try:
            access = authenticator.check(request.headers.get("authorization"))
        except AuthError as exc:
            return error_response(401, str(exc))
        if write and not access.can_write:
            return error_response(403, "this token is read-only")
        return access

    def sync_endpoint(
        name: str, write: bool = False
    ) -> Callable[[Callable[[Request], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
        def wrap(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                denied = authorize(request, write)
                if isinstance(denied, Response):
                    response = denied
                else:
                    try:
                        response = await handler(request)
                    except LockTimeout as exc:
                        response = error_response(503, str(exc))
                    except BadRequest as exc:
                        response = error_response(400, str(exc))
                    except bodies.BodyError as exc:
                        response = error_response(exc.status, exc.message)
                    except Exception as exc:
                        log.exception("%s failed", name)
                        response = error_response(503, f"temporarily unavailable: {exc}")
                metrics.sync_requests.labels(name, str(response.status_code)).inc()
                if store.database_id:
                    # Clients ignore it; edgenode's relay checks it on every pull, so a replica never
                    # applies frames of another database served at the same URL.
                    response.headers[DATABASE_ID_HEADER] = store.database_id
                return response

            return endpoint

        return wrap

    def path_ints(request: Request, *names: str) -> list[int]:
        try:
            values = [int(request.path_params[n]) for n in names]
        except ValueError as exc:
            raise BadRequest("generation and frame numbers must be integers") from exc
        if any(v < 0 or v >= 2**32 for v in values):
            raise BadRequest("generation and frame numbers are unsigned 32-bit integers")
        return values

    async def health(request: Request) -> Response:
        return json_response(HealthBody("ok", store.generation))

    @sync_endpoint("info")
    async def info(request: Request) -> Response:
        body = msgspec.convert(store.info(), InfoBody)
        if archiver is not None:
            body.archive = msgspec.convert(archiver.status(), ArchiveStatus)
        return json_response(body)

    async def export(request: Request) -> Response:
        denied = authorize(request)
        if isinstance(denied, Response):
            return denied
        try:
            (generation,) = path_ints(request, "generation")
        except BadRequest as exc:
            return error_response(400, str(exc))
        return ExportResponse(store, generation, metrics, workers)

    @sync_endpoint("pull")
    async def pull(request: Request) -> Response:
        generation, start, end = path_ints(request, "generation", "start", "end")
        if start < 1 or end <= start:
            raise BadRequest(f"bad frame range [{start}, {end})")
        try:
            wait_ms = min(int(request.query_params.get("wait_ms", "0") or 0), MAX_WAIT_MS)
        except ValueError as exc:
            raise BadRequest("wait_ms must be an integer") from exc
        deadline = asyncio.get_running_loop().time() + wait_ms / 1000
        while True:
            next_commit = notifier.next_commit()
            # A long-poller only wants the news: never send it more than it asked for.
            result = await workers.run(store.pull, generation, start, end, "wait_ms" not in request.query_params)
            remaining = deadline - asyncio.get_running_loop().time()
            if not (isinstance(result, CheckpointNeeded) and result.generation == generation and remaining > 0):
                break
            # Long-poll (not part of the client protocol): wait for the next commit, then look again.
            await notifier.wait(next_commit, remaining)
        if isinstance(result, Frames):
            metrics.frames_served.inc(result.last - result.first + 1)
            return Response(result.data, media_type="application/octet-stream")
        if isinstance(result, CheckpointNeeded):
            return json_response(CheckpointNeededBody("checkpoint_needed", result.generation, result.max_frame_no), 400)
        assert isinstance(result, Gone)
        return error_response(410, result.reason)

    @sync_endpoint("push", write=True)
    async def push(request: Request) -> Response:
        generation, start, end = path_ints(request, "generation", "start", "end")
        if end - start > MAX_PUSH_FRAMES:
            return error_response(413, f"push at most {MAX_PUSH_FRAMES} frames per request")
        # Clients push 128 frames at a time; refuse before buffering an arbitrarily large body.
        body = await bodies.read(request, max(end - start, 0) * FRAME_SIZE)
        reply = await workers.run(store.push, generation, start, end, request.path_params.get("baton"), body)
        if reply.status == "conflict":
            metrics.push_conflicts.inc()
        return json_response(reply)

    @sync_endpoint("rollover", write=True)
    async def rollover(request: Request) -> Response:
        await workers.run(store.rollover, True)
        return json_response(RolloverBody(store.generation))

    async def openapi_endpoint(request: Request) -> Response:
        denied = authorize(request)
        if isinstance(denied, Response):
            return denied
        return Response(document, media_type="application/json")

    backups = BackupService(Path(settings.data_dir), PRIMARY, store.durable_position)

    @sync_endpoint("backup", write=True)
    async def backup(request: Request) -> Response:
        try:
            report = await backups.run(request)
        except BackupRefused as exc:
            return error_response(exc.status, exc.message)
        return json_response(report)

    async def metrics_endpoint(request: Request) -> Response:
        denied = authorize(request)
        if isinstance(denied, Response):
            return denied
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def turso_sync(request: Request) -> Response:
        # A Turso Sync client (pyturso's turso.sync, @tursodatabase/sync) would otherwise see a bare
        # 404 "Not Found": name both protocols so the user knows which client to use.
        return error_response(TURSO_SYNC_STATUS, PRIMARY_REFUSES_TURSO_SYNC)

    routes: list[BaseRoute] = [
        *(Route(path, turso_sync, methods=["GET", "POST"]) for path in TURSO_SYNC_PATHS),
        Route("/health", health),
        Route("/info", info),
        Route("/export/{generation}", export),
        Route("/sync/{generation}/{start}/{end}", pull, methods=["GET"]),
        Route("/sync/{generation}/{start}/{end}", push, methods=["POST"]),
        Route("/sync/{generation}/{start}/{end}/{baton}", push, methods=["POST"]),
        Route("/rollover", rollover, methods=["POST"]),
        Route("/api/v1/backup", backup, methods=["POST"]),
        Route("/metrics", metrics_endpoint),
        Route("/openapi.json", openapi_endpoint),
    ]
    closers: list[Callable[[], None]] = []
    routes.extend(hrana_routes(store, settings, authenticator, metrics, closers))
    document = msgspec.json.encode(
        openapi.build(operations() + openapi.HRANA_OPERATIONS, routes, title="edgenode primary")
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        notifier.bind(asyncio.get_running_loop())
        await asyncio.to_thread(store.open)
        if archiver is not None:
            await asyncio.to_thread(archiver.start)
            log.info("archiving to %s", archiver.target.url)
        if settings.migrate:
            await asyncio.to_thread(apply_migrations, store)
        log.info("primary serving generation %d from %s", store.generation, store.db_path)
        try:
            yield
        finally:
            if archiver is not None:
                await asyncio.to_thread(archiver.stop)
            for close in closers:
                await asyncio.to_thread(close)
            await asyncio.to_thread(store.close)
            workers.shutdown()

    middleware: list[Middleware] = []
    if not authenticator.enabled:
        # Without a token, what a web page can make a browser send must be refused (edgenode.origins).
        guard = {"allowed_origins": settings.origins, "host": settings.host, "check_host": settings.binds_loopback}
        middleware.append(Middleware(OriginGuard, **guard, error_body=error_body))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.store = store
    app.state.openapi = document
    app.state.metrics = metrics
    app.state.notifier = notifier
    app.state.archiver = archiver
    return app


def operations() -> list[openapi.Operation]:
    """The primary's own routes for /openapi.json (Hrana's are edgenode.api.openapi's)."""
    op = functools.partial(openapi.Operation, error=ErrorBody)
    sync_errors = (400, 401, 403, 413, 503)
    frames = ("generation", "start", "end")
    return [
        op("get", "/health", "Liveness and the current generation.", None, HealthBody, auth=False, errors=()),
        op("get", "/info", "The current generation and the database's id.", None, InfoBody, errors=(401, 503)),
        op(
            "get",
            "/export/{generation}",
            "A generation's base database file (Range: bytes=N- resumes, 206).",
            None,
            {"type": "string", "format": "binary"},
            response_type=openapi.BINARY,
            ok=(200, 206),
            errors=(400, 401, 404, 410, 503),
            other=((416, openapi.TEXT, None),),
            integer_params=("generation",),
        ),
        op(
            "get",
            "/sync/{generation}/{start}/{end}",
            "Pull committed WAL frames [start, end) of a generation (400 with checkpoint_needed at the end).",
            None,
            {"type": "string", "format": "binary"},
            response_type=openapi.BINARY,
            errors=(401, 403, 410, 413, 503),
            other=((400, openapi.JSON, {"anyOf": [CheckpointNeededBody, ErrorBody]}),),
            integer_params=frames,
        ),
        *(
            op(
                "post",
                path,
                "Push WAL frames [start, end) of a generation (the body: 24-byte header + page per frame).",
                {"type": "string", "format": "binary"},
                PushReply,
                request_type=openapi.BINARY,
                errors=sync_errors,
                integer_params=frames,
            )
            for path in ("/sync/{generation}/{start}/{end}", "/sync/{generation}/{start}/{end}/{baton}")
        ),
        *(
            op(
                method,
                path,
                "Turso Sync (not libSQL's protocol): 501 naming the protocol this primary speaks.",
                auth=False,
                ok=(),
                errors=(TURSO_SYNC_STATUS,),
            )
            for path in TURSO_SYNC_PATHS
            for method in ("get", "post")
        ),
        op("post", "/rollover", "Start a new generation now.", None, RolloverBody, errors=(401, 403, 503)),
        op(
            "post",
            "/api/v1/backup",
            "Online backup into DATA_DIR/backups/ (body optional): where it went, generation, frame, rows.",
            BackupRequest,
            BackupReport,
            errors=(400, 401, 403, 409, 413, 415, 422, 503),
        ),
        op("get", "/metrics", "Prometheus metrics.", None, None, errors=(401,), response_type=openapi.TEXT),
        op("get", "/openapi.json", "This document.", None, None, errors=(401,)),
    ]


def apply_migrations(store: PrimaryStore) -> None:
    try:
        from edgenode.migrations import ApswTarget, run_migrations
    except ImportError:
        log.warning("edgenode.migrations is not available; skipping migrations")
        return
    conn = store.connect()
    try:
        with store.lock.shared(LOCK_TIMEOUT):
            report = run_migrations(ApswTarget(conn))
        for label in report.applied:
            log.info("applied migration %s", label)
    finally:
        conn.close()


def hrana_routes(
    store: PrimaryStore,
    settings: Settings,
    authenticator: Authenticator,
    metrics: Metrics,
    closers: list[Callable[[], None]],
) -> list[BaseRoute]:
    try:
        from edgenode.hrana.server import HranaServer
    except ImportError:
        log.warning("edgenode.hrana.server is not available yet; Hrana endpoints are off")
        return []
    from edgenode.primary.backend import PrimaryBackend

    def authenticate(request: Request) -> Access:
        return authenticator.check(request.headers.get("authorization"))

    server = HranaServer(
        PrimaryBackend(store),
        authenticate,
        idle_timeout=settings.stream_idle_timeout,
        transaction_timeout=settings.transaction_timeout,
        max_body_bytes=settings.max_body_bytes,
        on_request=lambda endpoint: metrics.hrana_requests.labels(endpoint).inc(),
        on_error=lambda code: metrics.hrana_errors.labels(code).inc(),
    )
    closers.append(server.close)
    return list(server.routes())
