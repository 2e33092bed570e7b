"""A worker's link to its owner process: requests it does not answer itself, passed on whole.

HTTP goes over one pooled httpx client on the owner's unix socket: the request body is streamed up
as it arrives, the response streamed back as the owner writes it (a change stream's SSE included),
and when the client goes away the owner's request is closed too. WebSockets are joined to a
WebSocket the worker opens to the same path on the owner; messages and the close code pass through.
Authorization is the owner's: the client's headers go with the request unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import httpx
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

# (path, code, message) -> an error body in the shape of the route's API (commands.serve.error_body).
ErrorBody = Callable[[str, str, str], bytes]


def _target(scope: Scope) -> str:
    path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
    query = scope.get("query_string", b"").decode("latin-1")
    return path + ("?" + query if query else "")


class OwnerLink:
    def __init__(self, socket_path: str, error_body: ErrorBody) -> None:
        self.socket_path = socket_path
        self.error_body = error_body
        self.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=socket_path),
            # Reads have no bound: a change stream stays open as long as its client.
            timeout=httpx.Timeout(None, connect=5.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self.forwarded = 0

    async def aclose(self) -> None:
        await self.client.aclose()

    # -- HTTP ----------------------------------------------------------------------------------------

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.forwarded += 1
        body_done = asyncio.Event()

        async def body() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ConnectionAbortedError("the client went away while sending its request")
                chunk = message.get("body", b"")
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    break
            body_done.set()

        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _HOP]
        request = self.client.build_request(
            scope["method"], "http://owner" + _target(scope), headers=headers, content=body()
        )
        try:
            response = await self.client.send(request, stream=True)
        except (httpx.TransportError, ConnectionAbortedError) as exc:
            if not body_done.is_set() and isinstance(exc, ConnectionAbortedError):
                return  # nobody to answer
            log.warning("http worker: the owner process could not be reached: %s", exc)
            await self._unavailable(scope, send)
            return
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            # Streams until its client leaves: a graceful stop of this worker ends it (the client
            # resumes from its cursor) rather than waiting for it.
            scope[STREAMING_KEY] = True
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP],
                }
            )
            relay = asyncio.ensure_future(self._relay(response, send))
            gone = asyncio.ensure_future(self._client_gone(receive, body_done))
            try:
                await asyncio.wait({relay, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (relay, gone):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if relay.done() and not relay.cancelled():
                relay.result()
        finally:
            await response.aclose()

    async def _relay(self, response: httpx.Response, send: Send) -> None:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _client_gone(receive: Receive, body_done: asyncio.Event) -> None:
        await body_done.wait()
        while (await receive())["type"] != "http.disconnect":
            pass

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
