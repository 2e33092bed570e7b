"""REST routes: health, readiness, status, SQL reads and writes, metrics."""

from __future__ import annotations

import time

import msgspec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from edgenode import idempotency
from edgenode.api import schemas
from edgenode.api.errors import JSONResponse, read_json
from edgenode.api.node import Node
from edgenode.api.routing import read_route, write_route
from edgenode.errors import DatabaseError
from edgenode.expect import Expanded
from edgenode.versions import versions


def node(request: Request) -> Node:
    return request.app.state.node


def encode(value: msgspec.Struct, status: int = 200) -> Response:
    return Response(msgspec.json.encode(value), status_code=status, media_type="application/json")


async def health(_: Request) -> Response:
    return encode(schemas.HealthResponse(status="ok"))


async def ready(request: Request) -> Response:
    reason = node(request).not_ready_reason()
    if reason:
        return encode(schemas.ReadyResponse(status="not_ready", reason=reason), 503)
    return encode(schemas.ReadyResponse(status="ready"))


async def status(request: Request) -> Response:
    n = node(request)
    return encode(
        schemas.StatusResponse(
            role=n.db.role,
            database=n.db.status(),
            migrations=await n.db.migration_status(),
            versions=versions(),
            uptime_seconds=round(time.monotonic() - n.started_at, 3),
            components={c.name: c.status() for c in n.components},
        )
    )


async def query(request: Request) -> Response:
    body = await read_json(request, schemas.QueryRequest)
    n = node(request)
    if body.min_frame is not None or body.max_staleness_ms is not None or body.min_generation is not None:
        await n.db.wait_fresh(body.min_frame, body.max_staleness_ms, body.min_generation)
    start = time.perf_counter()
    result = await n.db.read(body.sql, body.params)
    elapsed = time.perf_counter() - start
    n.metrics.query_duration.labels("read").observe(elapsed)
    return encode(
        schemas.QueryResponse(
            columns=result.columns, rows=result.rows, elapsed_ms=round(elapsed * 1000, 3), decltypes=result.decltypes
        )
    )


async def execute(request: Request) -> Response:
    body = await read_json(request, schemas.ExecuteRequest)
    n = node(request)
    expanded = Expanded([(s.sql, s.params) for s in body.statements], [s.expect_rows for s in body.statements])
    statements = expanded.statements
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    keyed = idempotency.keyed(key, statements, n.settings.idempotency_retention)
    start = time.perf_counter()
    try:
        written = await n.db.write(statements, keyed)
    except DatabaseError as exc:
        mapped = expanded.error(exc)
        if mapped is exc:
            raise
        raise mapped from exc
    elapsed = time.perf_counter() - start
    n.metrics.query_duration.labels("write").observe(elapsed)
    results = [schemas.ExecResult(r.rows_affected, r.last_insert_rowid) for r in expanded.results(written.results)]
    elapsed_ms = round(elapsed * 1000, 3)
    position = written.position
    if written.write_id is not None:  # local-first: committed here, queued for the primary
        body: schemas.ExecuteResponse = schemas.PendingExecuteResponse(
            results, elapsed_ms, position.generation, position.frame, write_id=written.write_id, pending=written.pending
        )
    else:
        body = schemas.ExecuteResponse(results, elapsed_ms, position.generation, position.frame)
    response = encode(body)
    if keyed is not None:
        response.headers[idempotency.REPLAYED_HEADER] = "true" if written.replayed else "false"
    return response


async def metrics(request: Request) -> Response:
    n = node(request)
    database = n.db.status()
    n.metrics.db_size.set(database.get("size_bytes", 0))
    n.metrics.wal_size.set(database.get("wal_bytes", 0))
    return Response(generate_latest(n.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    return JSONResponse(request.app.state.openapi)


ROUTES = [
    read_route("/health", health, methods=["GET"]),
    read_route("/ready", ready, methods=["GET"]),
    read_route("/api/v1/status", status, methods=["GET"]),
    read_route("/api/v1/query", query, methods=["POST"]),
    write_route("/api/v1/execute", execute, methods=["POST"]),
    read_route("/metrics", metrics, methods=["GET"]),
    read_route("/openapi.json", openapi, methods=["GET"]),
]
