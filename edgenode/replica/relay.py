"""The sync relay: a helper process the libsql client's sync requests go through.

Why a process: the PyPI `libsql` binding holds the GIL for the whole of `conn.sync()` (measured: a
thread ticking every 10 ms ran once during a 6 s sync), and its HTTP client has no timeout. A
primary that accepts connections but never answers, or a network that drops mid-request, would
freeze the whole node (event loop included) for as long as the request hangs. Pointing the
client's `sync_url` at this relay bounds every sync:

- the node sets a deadline before each sync (`PUT /_relay/deadline`, seconds); requests past it,
  or upstream requests that run past it, get 424 at once;
- upstream 5xx and connection failures become 424 too: the client retries 5xx with backoff while
  holding the GIL, and the node's scheduler does its own backoff instead;
- a sync is cut into slices: once a sync has run for `--slice` seconds, the next pull that would
  start a new transaction is answered "checkpoint needed, same generation", which makes the client
  stop where it is (at a commit, its progress saved). The client applies a commit in ~2 fsyncs
  (its WAL at synchronous=FULL and its `-info` file), so catching up on thousands of commits would
  otherwise hold the GIL, and the node's one connection, for seconds; between slices reads run.
  The node learns that a sync was cut when it ends it (`PUT /_relay/deadline` 0 answers
  `{"truncated": true}`) and syncs again at once.

- a primary that names its database (edgenode's sends `x-edgenode-database-id` on every sync
  response) must name the one the replica follows (`PUT /_relay/database`): a mismatch, such as a
  primary wiped and recreated at the same URL, is answered 424 before the client sees a frame, and
  the end of the sync reports it (`{"database_changed": "..."}`) so the node rebuilds the replica.
- in local-first mode (`--refuse-push`) a push of raw frames (`POST /sync/...`) is refused (424): the
  node's local writes reach the primary only through its outbox, never as frames.

The relay exits when its stdin closes, so it never outlives the node (even after kill -9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx

from edgenode.primary import DATABASE_ID_HEADER
from edgenode.tls import client_context

log = logging.getLogger("edgenode.replica")

FAILED = 424  # not retried by the client, not parsed as "checkpoint needed" (400/500 are)
FRAME_SIZE = 4096 + 24
MAX_COMMITS_PER_RESPONSE = 16
_FORWARD_HEADERS = ("authorization", "content-type", "x-turso-encryption-key", "range")


def cut_after_commits(frames: bytes, limit: int) -> bytes:
    """At most `limit` transactions of a pull response (fewer frames than asked is fine for the
    client): each commit costs it two fsyncs, so a 128-frame answer of small transactions could
    hold the replica's connection for a second; this keeps a slice near its intended length."""
    commits = 0
    for end in range(FRAME_SIZE, len(frames) + 1, FRAME_SIZE):
        if int.from_bytes(frames[end - FRAME_SIZE + 4 : end - FRAME_SIZE + 8], "big"):
            commits += 1
            if commits == limit:
                return frames[:end]
    return frames


class RelayApp:
    def __init__(self, upstream: str, timeout: float, slice_seconds: float = 0.1, refuse_push: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.refuse_push = refuse_push
        self.timeout = timeout
        self.slice = slice_seconds
        self.deadline: float | None = None
        self.sync_started: float | None = None
        self.truncated = False
        self.mid_transaction = False
        self.database_id: str | None = None
        self.database_changed: str | None = None
        self.http = httpx.AsyncClient(
            timeout=None, limits=httpx.Limits(max_keepalive_connections=8), verify=client_context()
        )

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if path == "/_relay/database":
            self.database_id = body.decode() or None
            self.database_changed = None
            await self._reply(send, 200, b"{}")
            return
        if path == "/_relay/deadline":
            seconds = float(body.decode() or 0)
            truncated = self.truncated
            if seconds > 0:  # a sync starts
                self.deadline = time.monotonic() + seconds
                self.sync_started = time.monotonic()
                self.mid_transaction = False
            else:  # it ended
                self.deadline = self.sync_started = None
            self.truncated = False
            reply = {"truncated": truncated, "database_changed": self.database_changed}
            await self._reply(send, 200, json.dumps(reply).encode())
            return
        pull = scope["method"] == "GET" and path.startswith("/sync/")
        if self.refuse_push and scope["method"] == "POST" and path.startswith("/sync/"):
            message = b'{"error":"local-first node: local frames are never pushed (its outbox carries its writes)"}'
            await self._reply(send, FAILED, message)
            return
        if pull and self._slice_over():
            self.truncated = True
            generation = path.split("/")[2]
            body = b'{"status":"checkpoint_needed","generation":%s,"baton":null}' % generation.encode()
            await self._reply(send, 400, body)
            return
        # Outside a sync (statements the client forwards to the primary) the default timeout applies.
        remaining = self.timeout if self.deadline is None else self.deadline - time.monotonic()
        if remaining <= 0:
            await self._reply(send, FAILED, b'{"error":"sync deadline passed (the node\'s sync timeout)"}')
            return
        headers = {
            k.decode().lower(): v.decode() for k, v in scope["headers"] if k.decode().lower() in _FORWARD_HEADERS
        }
        if headers.get("authorization", "x").strip().lower() in ("", "bearer"):
            # The libsql client sends `Bearer ` when it has no token (a primary without auth, the
            # usual local setup): a header value ending in a space is malformed HTTP, and no
            # credential at all is what it means.
            del headers["authorization"]
        query = scope.get("query_string", b"").decode()
        url = self.upstream + path + (f"?{query}" if query else "")
        try:
            response = await self.http.request(
                scope["method"], url, content=bytes(body), headers=headers, timeout=remaining
            )
        except httpx.HTTPError as exc:
            message = f'{{"error":"primary unreachable: {type(exc).__name__}"}}'
            await self._reply(send, FAILED, message.encode())
            return
        status = response.status_code
        content = response.content
        reported = response.headers.get(DATABASE_ID_HEADER)
        if reported and self.database_id and reported != self.database_id:
            self.database_changed = (
                f"primary database changed: the replica follows {self.database_id}, the primary serves {reported}"
            )
            await self._reply(send, FAILED, json.dumps({"error": self.database_changed}).encode())
            return
        if pull and status == 200 and len(content) >= FRAME_SIZE:
            content = cut_after_commits(content, MAX_COMMITS_PER_RESPONSE)
            # The client ends its WAL session at commit frames; only cut a sync between transactions.
            last = content[len(content) - FRAME_SIZE :]
            self.mid_transaction = int.from_bytes(last[4:8], "big") == 0
        if status >= 500 and not (status == 500 and path.startswith("/sync/")):
            status, content = FAILED, f'{{"error":"primary answered {response.status_code}"}}'.encode()
        out_headers = [(b"content-type", response.headers.get("content-type", "application/json").encode())]
        if "location" in response.headers:
            out_headers.append((b"location", response.headers["location"].encode()))
        await self._reply(send, status, content, out_headers)

    def _slice_over(self) -> bool:
        if self.sync_started is None or self.mid_transaction:
            return False
        return time.monotonic() - self.sync_started > self.slice

    @staticmethod
    async def _reply(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        headers = headers or [(b"content-type", b"application/json")]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def listen(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)
    return sock


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m edgenode.replica.relay")
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fd", type=int, default=None, help="a listening socket inherited from the node")
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--slice", type=float, default=0.1)
    parser.add_argument("--refuse-push", action="store_true", help="local-first: refuse POST /sync (frame pushes)")
    args = parser.parse_args(argv)

    def watch_parent() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader makes
        # interpreter shutdown die with "Fatal Python error: _enter_buffered_busy".
        while os.read(0, 4096):
            pass  # returns b"" at EOF: the node is gone
        os._exit(0)

    threading.Thread(target=watch_parent, daemon=True).start()
    sock = socket.socket(fileno=args.fd) if args.fd is not None else listen(args.port)
    try:
        os.write(1, b"%d\n" % sock.getsockname()[1])  # up: imports done, about to serve
    except OSError:  # the node died before reading our port (killed during start-up)
        os._exit(0)
    app = RelayApp(args.upstream, args.timeout, args.slice, args.refuse_push)
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    asyncio.run(uvicorn.Server(config).serve(sockets=[sock]))


class Relay:
    """The node's handle on its relay process (blocking methods: call them from worker threads)."""

    def __init__(self, upstream: str, timeout: float, refuse_push: bool = False) -> None:
        self.upstream = upstream
        self.timeout = timeout
        self.refuse_push = refuse_push
        self.port: int | None = None
        self.restarts = 0
        self._popen: subprocess.Popen[bytes] | None = None
        self._http = httpx.Client(timeout=2.0, verify=client_context())

    @property
    def url(self) -> str:
        assert self.port is not None, "spawn() the relay first"
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def spawn(self) -> None:
        """Start the process on a socket bound here, so its URL is known at once: the replica's
        connection opens while the relay's interpreter is still starting (connections wait in the
        socket's backlog meanwhile)."""
        sock = listen(self.port or 0)  # the same port again on a restart: the connection keeps its URL
        try:
            self.port = sock.getsockname()[1]
            args = [sys.executable, "-m", "edgenode.replica.relay", "--upstream", self.upstream]
            args += ["--timeout", str(self.timeout), "--fd", str(sock.fileno())]
            if self.refuse_push:
                args.append("--refuse-push")
            popen = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=(sock.fileno(),))
            self._popen = popen
        finally:
            sock.close()  # the relay holds its own copy

    def start(self) -> None:
        """Spawn and wait until the relay is up (its first line)."""
        self.spawn()
        assert self._popen is not None and self._popen.stdout is not None
        if not self._popen.stdout.readline().strip():
            code = self._popen.wait(5)
            raise RuntimeError(f"the sync relay exited with {code} before listening")

    def ensure(self) -> bool:
        """Restart the relay if it died; True when it was restarted."""
        if self.alive():
            return False
        self.restarts += 1
        log.warning("the sync relay is not running; restarting it")
        self.start()
        return True

    def set_deadline(self, seconds: float) -> bool:
        """Start a sync with this deadline (0: end it); ending answers whether the relay cut it short.

        The node's connection process does the same over HTTP (connection.py)."""
        response = self._http.put(f"{self.url}/_relay/deadline", content=str(seconds))
        return bool(response.json().get("truncated"))

    def set_database(self, database_id: str | None) -> None:
        """The database the replica follows (None: the primary names none, check nothing)."""
        self._http.put(f"{self.url}/_relay/database", content=database_id or "")

    def stop(self) -> None:
        popen, self._popen = self._popen, None
        if popen is None:
            return
        if popen.stdin:
            popen.stdin.close()
        try:
            popen.wait(5)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait(5)
        self._http.close()


if __name__ == "__main__":
    main()
