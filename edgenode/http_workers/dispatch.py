"""Which requests a worker answers itself, and which go to the owner.

Answered here, from the worker's own readers (`database.py`), with the same checks and limits as
on the owner:
- REST `POST /api/v1/query` (a read by construction: `prepare_read` refuses anything else);
- a Hrana pipeline (`/v2/pipeline`, `/v3/pipeline`) that opens a stream (no baton) and only
  reads: `execute`/`batch` of plain reads (no transaction control, no stream PRAGMA, no stored
  SQL), `get_autocommit`, `close`. The worker's Hrana server is stateless: the stream ends with
  the request (a null baton in the response, which tells the client its stream is closed; its next
  request opens a new one, in the same state: a stream that only read in autocommit holds nothing).
  So every baton a client ever holds is the owner's, and a request carrying one is forwarded to it,
  wherever it lands.
Everything else is forwarded (`forward.py`): writes, Hrana streams, cursors, change streams and
WebSockets, vectors, text, status, metrics, backups, health.

Every response a worker sends names it: `x-edgenode-worker: <pid>` when it answered itself,
`<pid>, forwarded` when the owner did (on a WebSocket, in the handshake response), so an operator
or a test can tell where a request landed and where it was served.
"""

from __future__ import annotations

import os

import msgspec
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgenode import statements
from edgenode.analysis import StatementAnalyzer
from edgenode.hrana import protocol as p
from edgenode.hrana.sql import is_begin_readonly, single_statement
from edgenode.http_workers.database import ReadOnlyLocalDatabase
from edgenode.http_workers.forward import OwnerLink
from edgenode.sessions import stream_pragma_of

WORKER_HEADER = b"x-edgenode-worker"
QUERY_PATH = "/api/v1/query"
PIPELINE_PATHS = frozenset({"/v2/pipeline", "/v3/pipeline"})


class Dispatcher:
    def __init__(self, local: ASGIApp, db: ReadOnlyLocalDatabase, link: OwnerLink, max_body_bytes: int) -> None:
        self.local = local
        self.db = db
        self.link = link
        self.max_body_bytes = max_body_bytes
        self.served = 0
        pid = str(os.getpid()).encode()
        self._answered = (WORKER_HEADER, pid)
        self._forwarded = (WORKER_HEADER, pid + b", forwarded")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.local(scope, receive, send)
            return
        await self._route(scope, receive, send)

    @staticmethod
    def _naming(send: Send, name: tuple[bytes, bytes]) -> Send:
        async def naming(message: Message) -> None:
            if message["type"] in ("http.response.start", "websocket.accept"):
                message["headers"] = [*message.get("headers", ()), name]
            await send(message)

        return naming

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self.link.websocket(scope, receive, self._naming(send, self._forwarded))
            return
        path = scope["path"]
        if scope["method"] == "POST" and self.db.started:
            if path == QUERY_PATH:
                if self.db.behind_owner():
                    await self.db.refresh_schema()
                self.served += 1
                await self.local(scope, receive, self._naming(send, self._answered))
                return
            if path in PIPELINE_PATHS:
                body, complete = await _read_body(receive, self.max_body_bytes)
                replay = _replaying(body, complete, receive)
                if complete:
                    if self.db.behind_owner():
                        await self.db.refresh_schema()
                    analyzer = self.db.analyzer
                    if analyzer is not None and stateless_reads(body, analyzer):
                        self.served += 1
                        await self.local(scope, replay, self._naming(send, self._answered))
                        return
                await self.link.http(scope, replay, self._naming(send, self._forwarded))
                return
        await self.link.http(scope, receive, self._naming(send, self._forwarded))


def stateless_reads(body: bytes, analyzer: StatementAnalyzer) -> bool:
    """Whether a pipeline opens a stream and only reads (see the module docstring)."""
    try:
        pipeline = msgspec.json.decode(body, type=p.PipelineReqBody)
    except msgspec.ValidationError:
        return False
    except msgspec.DecodeError:
        return False
    if pipeline.baton is not None or not pipeline.requests:
        return False
    for request in pipeline.requests:
        if isinstance(request, p.ExecuteReq):
            stmts = [request.stmt]
        elif isinstance(request, p.BatchReq):
            stmts = [step.stmt for step in request.batch.steps]
        elif isinstance(request, (p.GetAutocommitReq, p.CloseReq)):
            continue
        else:
            return False
        if not all(stmt.sql is not None and _plain_read(analyzer, stmt.sql) for stmt in stmts):
            return False
    return True


def _plain_read(analyzer: StatementAnalyzer, sql: str) -> bool:
    try:
        statement = single_statement(sql)
        if is_begin_readonly(statement):
            return False
        analysis = statements.analyze(analyzer, statement)
    except Exception:
        return False  # the owner words the error (and may know a table this mirror does not yet)
    return analysis.is_readonly and not analysis.is_transaction_control and stream_pragma_of(analysis) is None


async def _read_body(receive: Receive, limit: int) -> tuple[bytes, bool]:
    """The request body up to `limit` bytes, and whether that is all of it."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > limit:
            return b"".join(chunks), False


def _replaying(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive that gives back what was read, then the rest from the client."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replay
