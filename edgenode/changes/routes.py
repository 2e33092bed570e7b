"""The change stream's routes: SSE `GET /api/v1/changes`, WebSocket `/api/v1/changes/ws`, and
`PUT`/`DELETE /api/v1/changes/tables/{table}` to capture a table (or stop).

SSE: each change is `id: <cursor>` + `data: <json>`; the stream ends with `event: resync` or
`event: error` and a JSON reason; `: keep-alive` comments every `changes_heartbeat` seconds. A
client resumes with `Last-Event-ID` (what EventSource sends on its own when it reconnects) or
`?after=<cursor>`; given both, `Last-Event-ID` wins, being the newer of the two.
WebSocket: the same JSON objects as text messages (each carries its `cursor`); the end is a message
`{"event": "resync" | "error", "reason", "message", ...}` and a close (code 1000, or 1008 for a
refused subscription and a token that expired or was revoked). A WebSocket resumes with
`?after=<cursor>` only: a browser's WebSocket cannot send `Last-Event-ID` (or any header), so the
route does not read it. WebSocket keep-alive is the server's protocol ping (uvicorn's
`ws_ping_interval`, 20 s). A plain HTTP GET of the WebSocket's path is 426 Upgrade Required.

Both stream routes take the token as `?access_token=` as well as in the Authorization header (the
header wins when both are given): a browser's EventSource and WebSocket cannot set headers. No
other route takes it (`api/routing.py`), and log lines show it redacted (`edgenode.http_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from edgenode import feed
from edgenode.api.errors import ApiError, JSONResponse, error_response
from edgenode.api.routing import read_route, write_route
from edgenode.auth import Authenticator, AuthError, query_token
from edgenode.changes.hub import Ended, Event, Filter, Subscriber
from edgenode.changes.models import CapturedTables, CaptureResponse
from edgenode.http_server import STREAMING_KEY

if TYPE_CHECKING:
    from edgenode.changes.hub import ChangeHub

IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_TABLES = 32
_KINDS = {
    "view": "a view",
    "virtual": "a virtual table",
    "shadow": "a shadow table of a virtual table (FTS5, R*Tree, ...)",
}


async def _schema_table(db: Any, table: str) -> tuple[str, str, bool] | None:
    """`table` as the schema spells it (SQLite matches names without regard to case, the feed and
    the subscriptions by exact text), its type (`table`, `view`, `virtual`, `shadow`) and whether it
    is WITHOUT ROWID; None when the main database has no such table."""
    result = await db.read("SELECT name, type, wr FROM pragma_table_list(?) WHERE schema = 'main'", [table])
    if not result.rows:
        return None
    name, kind, without_rowid = result.rows[0]
    return str(name), str(kind), bool(without_rowid)


# Reasons a stream ends for its credential: a WebSocket closes with 1008 (policy violation) for them.
AUTH_ENDS = frozenset({"token_expired", "token_revoked"})


async def _columns(db: Any, table: str) -> dict[str, str]:
    """Column name -> declared type of `table` (empty when there is no such table)."""
    result = await db.read("SELECT name, type FROM pragma_table_info(?)", [table])
    return {name: (decl or "") for name, decl in result.rows}


def _typed(value: str, decl: str, column: str) -> Any:
    """The filter's value as the column's affinity stores it (SQLite's rules, section 3.1)."""
    upper = decl.upper()
    try:
        if "INT" in upper:
            return int(value)
        if any(t in upper for t in ("REAL", "FLOA", "DOUB")):
            return float(value)
    except ValueError:
        raise ApiError(400, "invalid_filter", f"where: {column} is {decl}; {value!r} is not a number") from None
    if "BLOB" in upper:
        raise ApiError(400, "invalid_filter", f"where: {column} is a BLOB column; filter on another column")
    return value


def _cursor(raw: str, where: str) -> int:
    if not raw.isdigit() or len(raw) > 19:
        raise ApiError(400, "invalid_cursor", f"{where} must be a cursor (a non-negative integer), got {raw!r}")
    return int(raw)


async def parse_subscription(db: Any, params: Any, last_event_id: str | None) -> tuple[Filter, int | None]:
    """The subscription a request asks for, checked against the schema: ApiError 400 otherwise."""
    raw_tables = params.get("tables") or ""
    tables = [t.strip() for t in raw_tables.split(",") if t.strip()]
    if not tables:
        raise ApiError(400, "invalid_request", "give the tables to follow: ?tables=a,b")
    if len(tables) > MAX_TABLES:
        raise ApiError(400, "invalid_request", f"at most {MAX_TABLES} tables per subscription")
    for table in tables:
        if not IDENT.match(table):
            raise ApiError(400, "invalid_request", f"{table!r} is not a table name")
    captured = await feed.captured_tables(db)
    columns: dict[str, dict[str, str]] = {}
    for i, given in enumerate(tables):
        found = await _schema_table(db, given)
        tables[i] = table = found[0] if found else given
        columns[table] = await _columns(db, table)
        if not columns[table]:
            raise ApiError(400, "unknown_table", f"no table {table!r} in this database")
        if table not in captured:
            raise ApiError(
                400,
                "table_not_captured",
                f"table {table!r} is not captured for the change stream; "
                f"PUT /api/v1/changes/tables/{table} with the read-write token first",
            )
    column = value = None
    where = params.get("where")
    if where is not None:
        column, eq, text = where.partition("=")
        if not eq or not IDENT.match(column):
            raise ApiError(400, "invalid_filter", "where must be column=value, e.g. where=status=open")
        for table in tables:
            if column not in columns[table]:
                raise ApiError(400, "invalid_filter", f"where: table {table!r} has no column {column!r}")
        value = _typed(text, columns[tables[0]][column], column)
    # Last-Event-ID first: EventSource reconnects by itself to the same URL, whose `after` is older
    # than the last event it got (resuming from `after` would send events twice).
    after = None
    if last_event_id:
        after = _cursor(last_event_id.strip(), "Last-Event-ID")
    elif params.get("after") is not None:
        after = _cursor(params["after"], "after")
    return Filter(frozenset(tables), column, value), after


def _credential(connection: HTTPConnection) -> tuple[str | None, bool]:
    """The request's credential as a bearer header value, and whether it came in the query (read
    by the middleware's own function: the token it checked is the one subscribed with)."""
    header = connection.headers.get("authorization")
    if header is None and (token := query_token(connection.scope.get("query_string", b""))) is not None:
        return f"Bearer {token}", True
    return header, False


def _check(authenticator: Authenticator, authorization: str | None, from_query: bool) -> None:
    if from_query:
        authenticator.check_query_token((authorization or "").removeprefix("Bearer "))
    else:
        authenticator.check(authorization)


class ChangeStream:
    """The SSE response: a raw ASGI app so a stalled client can be cut off mid-send."""

    def __init__(self, hub: ChangeHub, sub: Subscriber | None, ended: Ended | None = None) -> None:
        self.hub = hub
        self.sub = sub
        self.ended = ended

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[STREAMING_KEY] = True  # a graceful shutdown ends it (edgenode.http_server)
        headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # proxies (nginx) would hold events back otherwise
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})

        async def body(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        async def write(event: Event) -> None:
            await body(b"id: %d\ndata: %s\n\n" % (event.seq, event.payload()))

        async def heartbeat() -> None:
            await body(b": keep-alive\n\n")

        async def disconnected() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        ended = self.ended
        if self.sub is not None:
            with contextlib.suppress(OSError):
                await body(b": subscribed\n\n")
            ended = await _serve_until_gone(self.hub, self.sub, write, heartbeat, disconnected)
        if ended is not None:
            with contextlib.suppress(TimeoutError, OSError):
                async with asyncio.timeout(5):
                    await body(b"event: %s\ndata: %s\n\n" % (ended.kind.encode(), ended.payload()))
                    await send({"type": "http.response.body", "body": b"", "more_body": False})


def change_routes(hub: ChangeHub) -> list[BaseRoute]:
    db = hub.db

    async def sse(request: Request) -> Response | ChangeStream:
        try:
            filt, after = await parse_subscription(db, request.query_params, request.headers.get("last-event-id"))
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)
        authorization, _ = _credential(request)  # checked by the middleware
        try:
            sub = await hub.subscribe(filt, after, authorization)
        except AuthError as exc:
            # The key was rotated while the request was let in and its subscription parsed.
            return error_response(401, "unauthorized", str(exc), headers={"WWW-Authenticate": "Bearer"})
        except Ended as ended:
            return ChangeStream(hub, None, ended)
        except TimeoutError:
            return error_response(503, "unavailable", "the change stream has not read the feed yet; retry")
        return ChangeStream(hub, sub)

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            authorization, from_query = _credential(websocket)
            _check(hub.authenticator, authorization, from_query)
            # No Last-Event-ID: a browser's WebSocket cannot send it; `?after=` resumes.
            filt, after = await parse_subscription(db, websocket.query_params, None)
            sub = await hub.subscribe(filt, after, authorization)
        except AuthError as exc:
            await _ws_end(websocket, {"event": "error", "reason": "unauthorized", "message": str(exc)}, 1008)
            return
        except ApiError as exc:
            await _ws_end(websocket, {"event": "error", "reason": exc.code, "message": exc.message}, 1008)
            return
        except Ended as ended:
            await _ws_end(websocket, {"event": ended.kind, **ended.body}, 1000)
            return
        except TimeoutError:
            body = {"event": "error", "reason": "unavailable", "message": "the change stream is not ready; retry"}
            await _ws_end(websocket, body, 1013)
            return

        async def write(event: Event) -> None:
            await websocket.send_text(event.payload().decode())

        async def heartbeat() -> None:
            return None  # the server's WebSocket pings keep the connection alive

        async def disconnected() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while (await websocket.receive())["type"] != "websocket.disconnect":
                    pass

        ended = await _serve_until_gone(hub, sub, write, heartbeat, disconnected)
        if ended is not None:
            code = 1008 if ended.body["reason"] in AUTH_ENDS else 1000
            await _ws_end(websocket, {"event": ended.kind, **ended.body}, code)

    async def ws_without_upgrade(request: Request) -> Response:
        # The path is a WebSocket's; a plain GET (a probe, an HTTP client) learns so instead of a 404.
        return error_response(
            426,
            "upgrade_required",
            "/api/v1/changes/ws is a WebSocket: connect with a WebSocket client (Upgrade: websocket), "
            "or read the same stream as Server-Sent Events from GET /api/v1/changes",
            headers={"Upgrade": "websocket", "Connection": "Upgrade"},
        )

    async def put_table(request: Request) -> Response:
        table = request.path_params["table"]
        try:
            await hub.follow_renames()  # a renamed table's triggers would capture it twice
            return JSONResponse(await capture(db, table))
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, **exc.extra)

    async def delete_table(request: Request) -> Response:
        table = request.path_params["table"]
        if not IDENT.match(table):
            return error_response(400, "invalid_request", f"{table!r} is not a table name")
        found = await _schema_table(db, table)
        table = found[0] if found else table  # a dropped table took its triggers with it
        await db.write(feed.drop_capture_statements(table))
        return JSONResponse(CaptureResponse(table, False))

    async def list_tables(request: Request) -> Response:
        return JSONResponse(CapturedTables(sorted(await feed.captured_tables(db)), hub.position))

    return [
        read_route("/api/v1/changes", sse, methods=["GET"], query_token=True),
        WebSocketRoute("/api/v1/changes/ws", ws),
        read_route("/api/v1/changes/ws", ws_without_upgrade, methods=["GET"], query_token=True),
        read_route("/api/v1/changes/tables", list_tables, methods=["GET"]),
        write_route("/api/v1/changes/tables/{table}", put_table, methods=["PUT"]),
        write_route("/api/v1/changes/tables/{table}", delete_table, methods=["DELETE"]),
    ]


async def capture(db: Any, table: str) -> CaptureResponse:
    """Install (or refresh, after ALTER TABLE) the stream's triggers of `table`."""
    if not IDENT.match(table):
        raise ApiError(
            400,
            "invalid_request",
            f"{table!r} cannot be captured: the change stream takes tables named with letters, digits "
            "and _ (not starting with a digit); rename the table to capture it",
        )
    if table.lower().startswith(("_edgenode", "sqlite_")):
        raise ApiError(400, "invalid_request", f"{table!r} is internal (edgenode's or SQLite's) and cannot be captured")
    found = await _schema_table(db, table)
    if found is None:
        raise ApiError(404, "unknown_table", f"no table {table!r} in this database")
    table, kind, without_rowid = found
    # Triggers on these would fail at creation (views, virtual tables) or break the table's writes
    # (`new.rowid` does not exist WITHOUT ROWID; a shadow table belongs to its virtual table).
    if kind != "table":
        what = _KINDS.get(kind, f"a {kind} table")
        raise ApiError(400, "invalid_request", f"{table!r} is {what}; only ordinary tables can be captured")
    if without_rowid:
        raise ApiError(
            400,
            "invalid_request",
            f"{table!r} is a WITHOUT ROWID table; the change stream identifies rows by rowid and cannot capture it",
        )
    columns = await _columns(db, table)
    if hidden := feed.rowid_hidden(table, columns):
        raise ApiError(400, "invalid_request", hidden)
    for column in columns:
        if not IDENT.match(column):
            raise ApiError(400, "invalid_request", f"column {column!r} of {table!r} is not a plain identifier")
    await db.write(feed.capture_statements(table, list(columns), await feed.has_row_column(db)))
    return CaptureResponse(table, True, list(columns))


async def _serve_until_gone(
    hub: ChangeHub,
    sub: Subscriber,
    write: Callable[[Event], Awaitable[None]],
    heartbeat: Callable[[], Awaitable[None]],
    disconnected: Callable[[], Awaitable[None]],
) -> Ended | None:
    """Serve `sub` until its stream ends or its client goes; the reason to send last, or None when
    there is nobody left to tell (the client left, or could not take even the reason). Both tasks
    are awaited to the end, so a send that failed on a closed connection is never left unretrieved."""
    serving = asyncio.create_task(hub.serve(sub, write, heartbeat))
    watching = asyncio.create_task(disconnected())
    try:
        await asyncio.wait({serving, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.unsubscribe(sub)
        gone = watching.done()
        for task in (serving, watching):
            task.cancel()
        outcome = await asyncio.gather(serving, watching, return_exceptions=True)
    ended = outcome[0]
    if gone or not isinstance(ended, Ended):
        return None  # cancelled, or a send failed: the server closes the connection
    return ended


async def _ws_end(websocket: WebSocket, body: dict[str, Any], code: int) -> None:
    with contextlib.suppress(Exception):
        async with asyncio.timeout(5):
            await websocket.send_text(msgspec.json.encode(body).decode())
            await websocket.close(code)
