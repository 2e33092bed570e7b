"""The HTTP server under node and primary: uvicorn on httptools, with the time limits it lacks.

uvicorn bounds only the idle time between requests (keep-alive). A client that sends half a request
head, or a body shorter than its Content-Length, holds its connection, and the handler waiting on
the body, forever: a few such clients would hold the server. `GuardedProtocol` adds

- a head timeout: from a request's first byte (or the connection's opening) to the end of its
  headers; past it the connection is closed (after a bare 408 if a request had begun);
- a body timeout: from the end of the headers to the end of the body; past it the client gets a
  408 in the app's error shape and the connection is closed. The handler reading the body sees the
  client as gone (its own answer goes nowhere), and the 408 is logged once, here.

`max_connections` is uvicorn's `limit_concurrency`: past it new requests are answered 503 at once.
A WebSocket message from a client past `WS_MAX_MESSAGE` closes the connection with 1009.

`RedactTokens` takes `access_token=` values out of uvicorn's log lines: uvicorn logs each WebSocket
with its path and query string (and, when on, its access log each request's), and a browser's
change stream carries its token there (`edgenode.auth.QUERY_TOKEN`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
import re
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_plus

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from edgenode.auth import QUERY_TOKEN
from edgenode.bodies import TIMED_OUT_KEY
from edgenode.config import Settings

log = logging.getLogger(__name__)

# Set in a scope by a response that streams until its client leaves (the change stream): a graceful
# shutdown would wait for it forever, so shutdown ends it as if the client had gone.
STREAMING_KEY = "edgenode.streaming"

# (path, code, message) -> the JSON body of an error answered by the server itself.
ErrorBody = Callable[[str, str, str], bytes]

# Largest WebSocket message a client may send (uvicorn's ws_max_size; past it the connection closes
# with 1009, message too big). The one WebSocket, the change stream, reads nothing from its
# clients, and uvicorn's default (16 MiB) let a client make the server take in and drop megabytes.
WS_MAX_MESSAGE = 16 * 1024

_BARE_408 = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class GuardedProtocol(HttpToolsProtocol):
    def __init__(
        self, *args: Any, header_timeout: float, body_timeout: float, error_body: ErrorBody, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._body_timeout = body_timeout
        self._error_body = error_body
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._request_begun = False

    # --- the two timers ---------------------------------------------------------------------------

    def _arm_head(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.scope.get(STREAMING_KEY):
            # Its client resumes from its cursor; the handler's receive() returns http.disconnect.
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.close()
            return
        super().shutdown()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._request_begun:
            log.warning(
                "closed a connection from %s: request headers not complete within %g s",
                _peer(self.client),
                self._header_timeout,
            )
            self.transport.write(_BARE_408)
        self.transport.close()

    def _body_timed_out(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or self.transport.is_closing():
            return
        if not cycle.response_started:
            path = cycle.scope.get("path", "")
            log.warning(
                "answered 408 to %s %s from %s: request body not complete within %g s",
                cycle.scope.get("method"),
                path,
                _peer(self.client),
                self._body_timeout,
            )
            cycle.scope[TIMED_OUT_KEY] = True  # type: ignore[literal-required]
            message = f"request body not received within {self._body_timeout:g} s (body_timeout)"
            body = self._error_body(path, "timeout", message)
            head = (
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
            )
            self.transport.write(head + body)
        # The handler's receive() now returns http.disconnect, and whatever it sends is dropped.
        cycle.disconnected = True
        cycle.message_event.set()
        self.transport.close()

    # --- protocol and parser callbacks --------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        self._arm_head()

    def on_headers_complete(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._request_begun = False
        super().on_headers_complete()
        self._body_timer = self.loop.call_later(self._body_timeout, self._body_timed_out)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()


_QUERY_PARAM = re.compile(r"([?&])([^=&\s\"#?]*)=([^&\s\"#]*)")
REDACTED = "[redacted]"


def _redact_param(match: re.Match[str]) -> str:
    # Compared decoded, as the server reads it: `access%5Ftoken` is the same parameter.
    if unquote_plus(match[2]).lower() != QUERY_TOKEN:
        return match[0]
    return f"{match[1]}{match[2]}={REDACTED}"


def redact(text: str) -> str:
    """`text` with the value of every `access_token` query parameter in it replaced."""
    return _QUERY_PARAM.sub(_redact_param, text) if "?" in text else text


class RedactTokens(logging.Filter):
    """Rewrites a record's message and string arguments without the query's access token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def log_config() -> dict[str, Any]:
    """uvicorn's logging configuration with `RedactTokens` on each of its handlers."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact_tokens"]
    return config


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "?"


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, before_shutdown: Callable[[], Awaitable[None]] | None) -> None:
        super().__init__(config)
        self._before_shutdown = before_shutdown

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._before_shutdown is not None:
            await self._before_shutdown()
        await super().shutdown(sockets)


def run(
    app: Any,
    settings: Settings,
    error_body: ErrorBody,
    sockets: list[socket.socket] | None = None,
    before_shutdown: Callable[[], Awaitable[None]] | None = None,
    **options: Any,
) -> None:
    """uvicorn.run with the guarded protocol and the settings' connection bound; on `sockets`
    already bound (HTTP workers share one) instead of host and port when given. `before_shutdown`
    runs when a graceful stop begins, while the server still serves (HTTP workers drain first)."""
    protocol = functools.partial(
        GuardedProtocol,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        error_body=error_body,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        http=protocol,  # type: ignore[arg-type]
        limit_concurrency=settings.max_connections,
        ws_max_size=WS_MAX_MESSAGE,
        **{"log_config": log_config(), **options},
    )
    server = _Server(config, before_shutdown)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run exits
