"""Hrana over HTTP server: routes, streams, batons and expiry, over any `Backend`.

Every database call runs in a worker thread; the event loop only decodes, routes and encodes.
A stream is used by one request at a time (the baton is single-use and the stream is marked busy
while a request runs on it), so a Session never sees two calls at once.
"""

from __future__ import annotations

import inspect
import logging
import random
import secrets
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from edgenode import bodies
from edgenode.auth import Access, AuthError
from edgenode.hrana import protocol as p
from edgenode.hrana.backend import Backend, HranaError
from edgenode.hrana.batons import BatonError, BatonSigner
from edgenode.hrana.ended import answer_rollback
from edgenode.hrana.execute import ProtocolError, StreamContext, check_batch, check_request, cursor_entries, error_of

log = logging.getLogger(__name__)

JSON = "application/json"  # exactly this: the JS client compares the content type without parameters
_TOMBSTONE_SECONDS = 300.0  # how long a dead stream's baton still gets a precise error message
_TOMBSTONE_MAX = 10_000
_BUSY_WAIT_SECONDS = 5.0

T = TypeVar("T")


class HttpError(Exception):
    """An error answered at the HTTP level: `{"error", "message", "code"}` with this status."""

    def __init__(self, status: int, message: str, code: str):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class StreamEnded(HttpError):
    """The baton's stream was closed by the server; `rolled_back` when that ended a transaction."""

    def __init__(self, status: int, message: str, code: str, rolled_back: bool = False):
        super().__init__(status, message, code)
        self.rolled_back = rolled_back


def json_response(body: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(body), status_code=status, media_type=JSON)


def error_response(status: int, message: str, code: str) -> Response:
    return json_response(p.HttpErrorBody(error=message, message=message, code=code), status)


@dataclass(eq=False)
class _Stream:
    id: int
    seq: int
    ctx: StreamContext
    access: Access
    busy: bool
    last_used: float
    txn_since: float | None = None


class HranaServer:
    """Serves Hrana over HTTP for one backend.

    Metrics: `request_counts` (by endpoint, e.g. "v2/pipeline"), `error_counts` (by error code) and
    `open_streams` are kept here; `on_request(endpoint)` and `on_error(code)` are called as they
    happen for hosts that export metrics (`on_error` may be called from a worker thread).
    """

    def __init__(
        self,
        backend: Backend,
        authenticate: Callable[[Request], Access | Awaitable[Access]],
        *,
        idle_timeout: float = 10.0,
        transaction_timeout: float = 5.0,
        baton_key: bytes | None = None,
        base_url: str | None = None,
        max_streams: int = 1000,
        max_body_bytes: int | None = None,
        on_request: Callable[[str], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        stateless: bool = False,
    ):
        self.backend = backend
        # Every pipeline's stream ends with its request (the response's baton is null, which tells
        # the client the stream is closed): for a host whose streams may not outlive a request.
        self.stateless = stateless
        self.authenticate = authenticate
        self.idle_timeout = idle_timeout
        self.transaction_timeout = transaction_timeout
        self.base_url = base_url
        self.max_streams = max_streams
        self.max_body_bytes = max_body_bytes
        self.on_request = on_request
        self.on_error = on_error
        self.request_counts: Counter[str] = Counter()
        self.error_counts: Counter[str] = Counter()
        self._signer = BatonSigner(baton_key)
        # Stream ids and sequence numbers need not be secret (batons are HMAC-signed) but are drawn per
        # stream: secrets.randbits reads the OS's random device each time, a sixth of a stateless
        # request's event-loop time in profiles. A generator seeded from it once is enough.
        self._random = random.Random(secrets.randbits(256))
        self._lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._opening = 0  # streams whose session is being opened, counted against max_streams
        # stream id -> (when, code, message, whether ending it rolled back a transaction)
        self._tombstones: OrderedDict[int, tuple[float, str, str, bool]] = OrderedDict()
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()

    # --- public ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        return [
            Route("/v1/execute", self._v1_execute, methods=["POST"]),
            Route("/v1/batch", self._v1_batch, methods=["POST"]),
            Route("/v2", self._version_probe, methods=["GET"]),
            Route("/v2/pipeline", self._pipeline, methods=["POST"]),
            Route("/v3", self._version_probe, methods=["GET"]),
            Route("/v3/pipeline", self._pipeline, methods=["POST"]),
            Route("/v3/cursor", self._cursor, methods=["POST"]),
            Route("/v3-protobuf", self._protobuf_probe, methods=["GET"]),
        ]

    @property
    def open_streams(self) -> int:
        with self._lock:
            return len(self._streams)

    def expire_streams(self) -> int:
        """Close idle streams and streams holding a transaction too long; returns how many were closed.

        Runs periodically in a background thread; hosts and tests may call it directly."""
        now = time.monotonic()
        doomed: list[_Stream] = []
        with self._lock:
            for stream in list(self._streams.values()):
                if stream.busy:
                    continue
                if now - stream.last_used > self.idle_timeout:
                    message = f"the stream expired after {self.idle_timeout:g} s of inactivity"
                    if stream.txn_since is not None:
                        message += "; its transaction was rolled back"
                elif stream.txn_since is not None and now - stream.txn_since > self.transaction_timeout:
                    message = (
                        f"the stream held a transaction for longer than {self.transaction_timeout:g} s "
                        "(the server's transaction timeout); it was rolled back and the stream closed. "
                        "Commit sooner (clients that open transactions implicitly, such as PyPI libsql's "
                        "default isolation_level, hold one until commit()); ROLLBACK on this stream succeeds"
                    )
                else:
                    continue
                del self._streams[stream.id]
                self._bury(stream.id, "STREAM_EXPIRED", message, now, rolled_back=stream.txn_since is not None)
                doomed.append(stream)
        for stream in doomed:
            self._close_quietly(stream)
        return len(doomed)

    def close(self) -> None:
        """Stop the expiry thread and close every stream (rolling back open transactions)."""
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
            self._streams.clear()
        for stream in streams:
            self._close_quietly(stream)
        if self._reaper is not None and self._reaper is not threading.current_thread():
            self._reaper.join(timeout=5.0)

    async def aclose(self) -> None:
        await anyio.to_thread.run_sync(self.close)

    # --- plumbing -------------------------------------------------------------------------------

    def _count_request(self, endpoint: str) -> None:
        self.request_counts[endpoint] += 1
        if self.on_request is not None:
            self.on_request(endpoint)

    def _count_error(self, code: str) -> None:
        with self._lock:
            self.error_counts[code] += 1
        if self.on_error is not None:
            self.on_error(code)

    def _close_quietly(self, stream: _Stream) -> None:
        try:
            stream.ctx.close()
        except Exception:
            log.exception("hrana: closing stream %x failed", stream.id)

    def _bury(self, stream_id: int, code: str, message: str, now: float, rolled_back: bool = False) -> None:
        """Remember why a stream ended, so its baton gets a precise 400 (caller holds the lock)."""
        self._tombstones[stream_id] = (now, code, message, rolled_back)
        while self._tombstones:
            oldest_id, (buried_at, *_) = next(iter(self._tombstones.items()))
            if len(self._tombstones) <= _TOMBSTONE_MAX and now - buried_at < _TOMBSTONE_SECONDS:
                break
            del self._tombstones[oldest_id]

    def _ensure_reaper(self) -> None:
        interval = max(0.02, min(self.idle_timeout, self.transaction_timeout) / 4)

        def run() -> None:
            while not self._stop.wait(interval):
                try:
                    self.expire_streams()
                except Exception:
                    log.exception("hrana: stream expiry failed")

        with self._lock:
            if self._reaper is not None or self._stop.is_set():
                return
            self._reaper = threading.Thread(target=run, name="hrana-stream-expiry", daemon=True)
        self._reaper.start()

    async def _access(self, request: Request) -> Access:
        try:
            access = self.authenticate(request)
            if inspect.isawaitable(access):
                access = await access
        except AuthError as exc:
            raise HttpError(401, str(exc) or "unauthorized", "UNAUTHORIZED") from exc
        return access

    async def _decode(self, request: Request, body_type: type[T]) -> T:
        try:
            return await bodies.read_json(request, body_type, self.max_body_bytes)
        except bodies.BodyError as exc:
            if exc.reason == "too_large":
                raise HttpError(413, exc.message, "BODY_TOO_LARGE") from None
            if exc.reason == "media_type":
                raise HttpError(415, exc.message, "UNSUPPORTED_MEDIA_TYPE") from None
            raise HttpError(400, f"invalid request body: {exc.message}", "PROTOCOL_ERROR") from None

    async def _guarded(self, endpoint: str, handler: Callable[[], Awaitable[Response]]) -> Response:
        self._count_request(endpoint)
        try:
            return await handler()
        except HttpError as exc:
            self._count_error(exc.code)
            return error_response(exc.status, exc.message, exc.code)
        except ProtocolError as exc:
            self._count_error("PROTOCOL_ERROR")
            return error_response(400, str(exc), "PROTOCOL_ERROR")
        except HranaError as exc:
            # Only a backend failing outside any statement gets here (e.g. open_session on a v1 request).
            self._count_error(exc.code)
            return error_response(500, exc.message, exc.code)
        except Exception as exc:
            log.exception("hrana: %s failed", endpoint)
            self._count_error("INTERNAL_ERROR")
            return error_response(500, f"internal error: {exc}", "INTERNAL_ERROR")

    # --- streams --------------------------------------------------------------------------------

    async def _acquire(self, baton: str | None, access: Access) -> _Stream:
        if baton is None:
            return await self._open_stream(access)
        try:
            stream_id, seq = self._signer.decode(baton)
        except BatonError as exc:
            raise HttpError(400, f"invalid baton: {exc}", "BATON_INVALID") from exc
        deadline = time.monotonic() + _BUSY_WAIT_SECONDS
        while True:
            with self._lock:
                stream = self._streams.get(stream_id)
                if stream is None:
                    buried = self._tombstones.get(stream_id)
                    if buried is not None:
                        raise StreamEnded(400, buried[2], buried[1], rolled_back=buried[3])
                    raise HttpError(400, "invalid baton: no such stream", "BATON_INVALID")
                if stream.seq != seq:
                    raise HttpError(400, "baton was already used", "BATON_REUSED")
                if stream.access is not access:
                    raise HttpError(400, "baton belongs to a stream opened with other credentials", "BATON_INVALID")
                if not stream.busy:
                    stream.busy = True
                    stream.seq += 1
                    return stream
            # Only a cursor hands out its next baton while still running; let its body finish first.
            if time.monotonic() > deadline:
                raise HttpError(400, "the stream is still busy with a previous request", "BATON_REUSED")
            await anyio.sleep(0.01)

    async def _open_stream(self, access: Access) -> _Stream:
        evicted = None
        with self._lock:
            if self._stop.is_set():
                raise HttpError(503, "the server is shutting down", "SHUTTING_DOWN")
            if len(self._streams) + self._opening >= self.max_streams:
                evicted = self._evict_idle()
                if evicted is None:
                    raise HttpError(503, f"too many open streams ({self.max_streams})", "STREAMS_EXHAUSTED")
            self._opening += 1
        if evicted is not None:
            await anyio.to_thread.run_sync(self._close_quietly, evicted)
        try:
            if self.backend.open_session_blocks:
                session = await anyio.to_thread.run_sync(self.backend.open_session, access)
            else:
                session = self.backend.open_session(access)
        except HranaError as exc:
            raise HttpError(503, f"cannot open a database session: {exc.message}", exc.code) from exc
        finally:
            with self._lock:
                self._opening -= 1
        stream = _Stream(
            id=self._random.getrandbits(63),
            seq=self._random.getrandbits(63),
            ctx=StreamContext(session, on_error=self._count_error),
            access=access,
            busy=True,
            last_used=time.monotonic(),
        )
        with self._lock:
            self._streams[stream.id] = stream
        self._ensure_reaper()
        return stream

    def _evict_idle(self) -> _Stream | None:
        """Close the least recently used stream that is idle and holds no transaction (caller holds the lock).

        Clients that never close their streams (a stateless request with a null baton and no `close`)
        would otherwise fill `max_streams` within seconds and lock every other client out."""
        for stream in self._streams.values():  # least recently released first: see _release
            if not stream.busy and stream.txn_since is None:
                del self._streams[stream.id]
                message = f"the stream was closed to make room for new ones (more than {self.max_streams} open)"
                self._bury(stream.id, "STREAM_EXPIRED", message, time.monotonic())
                return stream
        return None

    def _release(self, stream: _Stream, lease: int) -> str | None:
        """Make the stream available again; the next baton, or None when the stream is closed.

        `lease` is the stream's seq when it was acquired: a late second release (a cursor releases both
        when its body ends and when its response finishes) must not free a later request's hold."""
        now = time.monotonic()
        with self._lock:
            if not stream.busy or stream.seq != lease:
                return None
            stream.busy = False
            stream.last_used = now
            if stream.ctx.session is None:
                if self._streams.pop(stream.id, None) is not None:
                    self._bury(stream.id, "STREAM_CLOSED", "the stream was closed", now)
                return None
            if self._streams.pop(stream.id, None) is not None:
                self._streams[stream.id] = stream  # to the end: the dict stays in least-recently-used order
            return self._signer.encode(stream.id, stream.seq)

    def _discard(self, stream: _Stream) -> None:
        """Drop a stream after an unexpected failure (its state can no longer be trusted)."""
        with self._lock:
            if self._streams.pop(stream.id, None) is not None:
                self._bury(stream.id, "STREAM_CLOSED", "the stream was closed after a server error", time.monotonic())
            stream.busy = False
        # Called on the event loop (possibly while being cancelled), where a blocking close has no place.
        threading.Thread(target=self._close_quietly, args=(stream,), name="hrana-discard", daemon=True).start()

    def _note_transaction(self, stream: _Stream, started: float) -> None:
        """Record whether the session was left inside a transaction (worker thread)."""
        session = stream.ctx.session
        if session is None:
            return
        try:
            in_txn = not session.is_autocommit()
        except Exception:
            log.exception("hrana: is_autocommit failed")
            return
        if not in_txn:
            stream.txn_since = None
        elif stream.txn_since is None:
            stream.txn_since = started

    # --- endpoints ------------------------------------------------------------------------------

    async def _version_probe(self, request: Request) -> Response:
        return json_response(p.VersionProbe(hrana=request.url.path.strip("/")))

    async def _protobuf_probe(self, request: Request) -> Response:
        # Non-2xx tells @libsql/client's openHttp(url, 3) to fall back to JSON.
        return error_response(404, "Hrana over HTTP with Protobuf encoding is not supported", "NOT_SUPPORTED")

    async def _pipeline(self, request: Request) -> Response:
        endpoint = request.url.path.strip("/")

        async def handle() -> Response:
            access = await self._access(request)
            body = await self._decode(request, p.PipelineReqBody)
            for index, stream_request in enumerate(body.requests):
                check_request(stream_request, index)
            try:
                stream = await self._acquire(body.baton, access)
            except StreamEnded as exc:
                # Ending a transaction the server already rolled back is answered, not refused (ended.py).
                answered = answer_rollback(body.requests) if exc.rolled_back else None
                if answered is None:
                    raise
                return json_response(p.PipelineRespBody(baton=None, base_url=self.base_url, results=answered))
            lease = stream.seq
            started = time.monotonic()
            # Requests the session answers on the loop (point reads, a close) skip the thread hop;
            # from the first one it cannot, the rest run in a worker thread, in order.
            answered: list[p.StreamResult] = []
            try:
                for stream_request in body.requests:
                    result = await stream.ctx.try_handle(stream_request)
                    if result is None:
                        break
                    answered.append(result)
            except BaseException:
                self._discard(stream)
                raise
            rest = body.requests[len(answered) :]

            def run() -> bytes:
                results = answered + [stream.ctx.handle(stream_request) for stream_request in rest]
                self._note_transaction(stream, started)
                # Encoded here, off the event loop: results can be megabytes.
                return msgspec.json.encode(results)

            try:
                if rest:
                    results = await anyio.to_thread.run_sync(run)
                else:
                    self._note_transaction(stream, started)
                    results = msgspec.json.encode(answered)
                if self.stateless and stream.ctx.session is not None:
                    if await stream.ctx.try_handle(p.CloseReq()) is None:
                        await anyio.to_thread.run_sync(stream.ctx.close)
            except BaseException:
                self._discard(stream)
                raise
            baton = self._release(stream, lease)
            # Same shape as PipelineRespBody, spliced so the results are not encoded twice.
            head = msgspec.json.encode({"baton": baton, "base_url": self.base_url})
            return Response(head[:-1] + b',"results":' + results + b"}", media_type=JSON)

        return await self._guarded(endpoint, handle)

    async def _cursor(self, request: Request) -> Response:
        async def handle() -> Response:
            access = await self._access(request)
            body = await self._decode(request, p.CursorReqBody)
            check_batch(body.batch)
            stream = await self._acquire(body.baton, access)
            lease = stream.seq
            # The next baton goes out first, but the stream stays busy until the body is finished.
            baton = self._signer.encode(stream.id, lease)
            header = p.CursorRespBody(baton=baton, base_url=self.base_url)
            return _CursorResponse(
                self._cursor_body(stream, lease, body.batch, header), lambda: self._release(stream, lease)
            )

        return await self._guarded("v3/cursor", handle)

    async def _cursor_body(
        self, stream: _Stream, lease: int, batch: p.Batch, header: p.CursorRespBody
    ) -> AsyncIterator[bytes]:
        encode = msgspec.json.encode
        try:
            yield encode(header) + b"\n"
            started = time.monotonic()
            steps = stream.ctx.run_steps(batch)

            def next_chunk() -> bytes | None:
                # One step per thread hop, encoded there too, so the event loop only forwards bytes.
                item = next(steps, None)
                if item is None:
                    return None
                return b"".join(encode(entry) + b"\n" for entry in cursor_entries(*item))

            while True:
                chunk = await anyio.to_thread.run_sync(next_chunk)
                if chunk is None:
                    break
                if chunk:
                    yield chunk
            await anyio.to_thread.run_sync(self._note_transaction, stream, started)
        except Exception as exc:
            log.exception("hrana: cursor failed")
            error = error_of(exc)
            self._count_error(error.code or "SQLITE_UNKNOWN")
            yield encode(p.ErrorEntry(error=error)) + b"\n"
        finally:
            self._release(stream, lease)

    async def _v1_execute(self, request: Request) -> Response:
        async def handle() -> Response:
            access = await self._access(request)
            body = await self._decode(request, p.V1ExecuteReq)
            check_request(p.ExecuteReq(stmt=body.stmt), 0)

            def run(ctx: StreamContext) -> bytes:
                try:
                    return msgspec.json.encode(p.V1ExecuteResp(result=ctx.execute(body.stmt)))
                except Exception as exc:
                    error = error_of(exc)
                    raise _StmtFailed(error.message, error.code or "SQLITE_UNKNOWN") from exc

            try:
                result = await self._one_shot(access, run)
            except _StmtFailed as exc:
                self._count_error(exc.code)
                # sqld answers statement errors on v1 with an HTTP error carrying the Error body.
                return error_response(400, exc.message, exc.code)
            return Response(result, media_type=JSON)

        return await self._guarded("v1/execute", handle)

    async def _v1_batch(self, request: Request) -> Response:
        async def handle() -> Response:
            access = await self._access(request)
            body = await self._decode(request, p.V1BatchReq)
            check_batch(body.batch)

            def run(ctx: StreamContext) -> bytes:
                return msgspec.json.encode(p.V1BatchResp(result=ctx.batch(body.batch)))

            return Response(await self._one_shot(access, run), media_type=JSON)

        return await self._guarded("v1/batch", handle)

    async def _one_shot(self, access: Access, run: Callable[[StreamContext], T]) -> T:
        """Run on a fresh session that is closed (rolling back anything left open) right after."""

        def job() -> T:
            ctx = StreamContext(self.backend.open_session(access), on_error=self._count_error)
            try:
                return run(ctx)
            finally:
                ctx.close()

        return await anyio.to_thread.run_sync(job)


class _StmtFailed(HranaError):
    """A v1 statement failed (as opposed to the backend failing to open a session)."""


class _CursorResponse(StreamingResponse):
    """A streamed cursor body that releases its stream even when the client goes away mid-body."""

    def __init__(self, body: AsyncIterator[bytes], on_finish: Callable[[], object]):
        # text/plain like sqld: it is newline-delimited JSON, not one JSON document.
        super().__init__(body, headers={"content-type": "text/plain"})
        self._body = body
        self._on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._body, "aclose", None)
                if aclose is not None:
                    await aclose()
            self._on_finish()
