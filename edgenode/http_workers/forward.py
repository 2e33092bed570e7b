"""A worker's link to its owner process: requests it does not answer itself, passed on whole.

HTTP goes over a pool of HTTP/1.1 connections to the owner's unix socket, written raw and read with
httptools (an httpx client cost more CPU than the owner's own handling of a write): the request
body is streamed up as it arrives, the response streamed back as the owner writes it (a change
stream's SSE included, with back-pressure), and when the client goes away the owner's connection
is closed, which ends its request too. WebSockets are joined to a
WebSocket the worker opens to the same path on the owner; messages and the close code pass through.
Authorization is the owner's: the client's headers go with the request unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import httptools
from starlette.types import Message, Receive, Scope, Send
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from edgenode.http_server import STREAMING_KEY

log = logging.getLogger(__name__)

# Headers about this hop only (RFC 9110 §7.6.1), and those the WebSocket client sets itself.
_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"}
_WS_OWN = _HOP | {
    b"host",
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
}

_POOL_SIZE = 64
_POOL_IDLE_SECONDS = 2.0

# (path, code, message) -> an error body in the shape of the route's API (commands.serve.error_body).
ErrorBody = Callable[[str, str, str], bytes]


def _request_head(scope: Scope) -> tuple[bytes, str | None]:
    """The request line and headers for the owner, and how its body is framed: "length" (the
    client's Content-Length), "chunked", or None (no body)."""
    lines = [b"%s %s HTTP/1.1" % (scope["method"].encode(), _target(scope).encode("latin-1"))]
    framing = None
    for name, value in scope["headers"]:
        lower = name.lower()
        if lower == b"expect":
            continue  # this worker's server answered the client's 100-continue already
        if lower in _HOP:
            if lower == b"transfer-encoding":
                framing = "chunked"
            continue
        if lower == b"content-length":
            framing = "length" if value.strip() != b"0" else None
        lines.append(name + b": " + value)
    if framing == "chunked":
        lines.append(b"transfer-encoding: chunked")
    return b"\r\n".join(lines) + b"\r\n\r\n", framing


def _end_to_end(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in _HOP]


def _is_event_stream(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(k.lower() == b"content-type" and v.startswith(b"text/event-stream") for k, v in headers)


async def _client_gone(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _target(scope: Scope) -> str:
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return path + ("?" + query if query else "")


class _OwnerConnection(asyncio.Protocol):
    """One HTTP/1.1 connection to the owner's unix socket, one request at a time; the response is
    parsed by httptools (as uvicorn parses requests) into a head and a queue of body chunks."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.head: asyncio.Future[tuple[int, list[tuple[bytes, bytes]]]] = asyncio.get_running_loop().create_future()
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.truncated = False  # the owner's connection ended before the response did
        self.reusable = False
        self.lost = False
        self.paused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.head.done():
            self.head.set_exception(ConnectionError("the owner closed the connection"))
        elif not self.complete:
            self.chunks.put_nowait(None)
            self.complete = True
            self.truncated = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            log.warning("http worker: unreadable response from the owner: %s", exc)
            assert self.transport is not None
            self.transport.close()
            return
        if self.chunks.qsize() > 16 and not self.paused and self.transport is not None:
            self.paused = True  # the client reads slower than the owner writes
            self.transport.pause_reading()

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.head.done():
            self.head.set_result((self.parser.get_status_code(), self.headers))

    def on_body(self, body: bytes) -> None:
        self.chunks.put_nowait(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.truncated = False
        self.reusable = self.parser.should_keep_alive()
        self.chunks.put_nowait(None)

    async def next_chunk(self) -> bytes | None:
        chunk = await self.chunks.get()
        if self.paused and self.chunks.qsize() < 4 and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return chunk

    def reset(self) -> None:
        """Ready for the next request on this connection."""
        self.parser = httptools.HttpResponseParser(self)
        self.head = asyncio.get_running_loop().create_future()
        self.headers = []
        self.complete = self.truncated = self.reusable = False
        self.idle_since = time.monotonic()


class OwnerLink:
    def __init__(self, socket_path: str, error_body: ErrorBody) -> None:
        self.socket_path = socket_path
        self.error_body = error_body
        self._idle: list[_OwnerConnection] = []
        self.forwarded = 0

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            if connection.transport is not None:
                connection.transport.close()

    # -- HTTP ----------------------------------------------------------------------------------------

    async def _connection(self) -> _OwnerConnection:
        # The owner's server closes a connection idle for its keep-alive timeout (uvicorn: 5 s);
        # one idle for less than half of that is reused, so a request never races that close.
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if not connection.lost and now - connection.idle_since < _POOL_IDLE_SECONDS:
                return connection
            if connection.transport is not None:
                connection.transport.close()
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_unix_connection(_OwnerConnection, self.socket_path)
        return connection

    def _give_back(self, connection: _OwnerConnection) -> None:
        if connection.lost or not connection.reusable or len(self._idle) >= _POOL_SIZE:
            if connection.transport is not None:
                connection.transport.close()
            return
        connection.reset()
        self._idle.append(connection)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.forwarded += 1
        head, framing = _request_head(scope)
        try:
            connection = await self._connection()
        except OSError as exc:
            log.warning("http worker: the owner process could not be reached: %s", exc)
            await self._unavailable(scope, send)
            return
        transport = connection.transport
        assert transport is not None
        finished = False
        try:
            transport.write(head)
            if framing is not None:
                # The request body, as it arrives (chunked when its client's length is unknown).
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # nobody to answer: the owner sees its request cut off
                    chunk = message.get("body", b"")
                    more = message.get("more_body", False)
                    if framing == "chunked":
                        if chunk:
                            transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                        if not more:
                            transport.write(b"0\r\n\r\n")
                    elif chunk:
                        transport.write(chunk)
                    if not more:
                        break
            try:
                status, headers = await connection.head
            except ConnectionError as exc:
                log.warning("http worker: the owner process did not answer: %s", exc)
                await self._unavailable(scope, send)
                return
            if scope["method"] == "HEAD":
                connection.reusable = False
                await send({"type": "http.response.start", "status": status, "headers": _end_to_end(headers)})
                await send({"type": "http.response.body", "body": b""})
                return
            if _is_event_stream(headers):
                # Streams until its client leaves: a graceful stop of this worker ends it (the client
                # resumes from its cursor) rather than waiting for it.
                scope[STREAMING_KEY] = True
            await send({"type": "http.response.start", "status": status, "headers": _end_to_end(headers)})
            if connection.complete:  # the whole response is here already (the common case)
                body = b"".join(iter(connection.chunks.get_nowait, None))
                await send({"type": "http.response.body", "body": body})
                finished = not connection.truncated
                return
            relay = asyncio.ensure_future(self._relay(connection, send))
            gone = asyncio.ensure_future(_client_gone(receive))
            try:
                await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (relay, gone):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            finished = relay.done() and not relay.cancelled() and relay.exception() is None and not connection.truncated
        finally:
            if finished:
                self._give_back(connection)
            else:
                transport.close()

    @staticmethod
    async def _relay(connection: _OwnerConnection, send: Send) -> None:
        while (chunk := await connection.next_chunk()) is not None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _unavailable(self, scope: Scope, send: Send) -> None:
        message = "the node's owner process cannot be reached (restarting?); retry"
        body = self.error_body(scope["path"], "unavailable", message)
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    # -- WebSocket -----------------------------------------------------------------------------------

    async def websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.forwarded += 1
        if (await receive())["type"] != "websocket.connect":
            return
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"] if k.lower() not in _WS_OWN]
        try:
            upstream = await unix_connect(
                self.socket_path,
                "ws://owner" + _target(scope),
                additional_headers=headers,
                subprotocols=scope.get("subprotocols") or None,  # type: ignore[arg-type]
                max_size=None,
                ping_interval=None,  # the owner pings this link; the worker's server pings the client
                open_timeout=10,
            )
        except InvalidStatus as exc:
            await send({"type": "websocket.close", "code": 1008 if exc.response.status_code < 500 else 1011})
            return
        except OSError as exc:
            log.warning("http worker: the owner process could not be reached: %s", exc)
            await send({"type": "websocket.close", "code": 1013})
            return
        async with upstream:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol})
            down = asyncio.ensure_future(self._ws_down(upstream, send))
            up = asyncio.ensure_future(self._ws_up(upstream, receive))
            try:
                await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (down, up):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    @staticmethod
    async def _ws_down(upstream: ClientConnection, send: Send) -> None:
        """Owner to client, then the owner's close code."""
        try:
            async for message in upstream:
                if isinstance(message, str):
                    await send({"type": "websocket.send", "text": message})
                else:
                    await send({"type": "websocket.send", "bytes": message})
        except ConnectionClosed:
            pass
        close = upstream.close_rcvd
        code = _sendable(close.code) if close is not None else 1011
        reason = close.reason if close is not None else ""
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": code, "reason": reason})

    @staticmethod
    async def _ws_up(upstream: ClientConnection, receive: Receive) -> None:
        """Client to owner, then the client's close code."""
        while True:
            message: Message = await receive()
            if message["type"] == "websocket.disconnect":
                await upstream.close(_sendable(message.get("code") or 1000))
                return
            text = message.get("text")
            await upstream.send(text if text is not None else message.get("bytes") or b"")


def _sendable(code: int) -> int:
    """A close code that may be sent (1005, 1006 and 1015 only describe a close, RFC 6455 §7.4.1)."""
    return 1000 if code in (1005, 1006, 1015) else code
