"""/openapi.json of node and primary, built from the msgspec types the routes really decode and encode.

Every operation of every front-end is listed here (REST, vectors, replica sync, Hrana, the
primary's sync protocol); `build` keeps those whose route the app mounts, so a node without a
replica does not advertise `/api/v1/sync`. tests/test_openapi.py checks that every mounted route is
described and runs schemathesis against real node and primary processes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.routing import BaseRoute, Route

from edgenode import __version__, backup, idempotency
from edgenode.api import schemas
from edgenode.changes import models as changes
from edgenode.hrana import protocol as hrana
from edgenode.text import models as text
from edgenode.vectors import models as vectors

JSON = "application/json"
BINARY = "application/octet-stream"
TEXT = "text/plain"

# A response body: a msgspec type, or None for none described.
Body = type | Any


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    request: Body = None
    response: Body = None
    auth: bool = True
    errors: tuple[int, ...] = (400, 401, 403, 413, 415, 422)
    response_type: str = JSON
    request_type: str = JSON
    error: Body = schemas.ErrorResponse  # the body of every status in `errors`
    ok: tuple[int, ...] = (200,)  # statuses answered with `response`
    other: tuple[tuple[int, str, Body], ...] = ()  # (status, content type, body) outside the two above
    integer_params: tuple[str, ...] = ()  # path parameters that are integers (others are strings)
    headers: tuple[tuple[str, dict[str, Any]], ...] = ()  # optional request headers and their schemas
    query: tuple[tuple[str, bool, dict[str, Any]], ...] = ()  # query parameters: name, required, schema


# Generations and frame numbers: the sync protocol's unsigned 32-bit integers.
_UINT32 = {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
_BODY_ERRORS = (400, 401, 403, 413, 415, 422)

OPERATIONS: list[Operation] = [
    Operation("get", "/health", "Liveness: the process answers.", None, schemas.HealthResponse, auth=False, errors=()),
    Operation(
        "get",
        "/ready",
        "Readiness: database open and within max lag (503 with the reason otherwise).",
        None,
        schemas.ReadyResponse,
        auth=False,
        errors=(),
        other=((503, JSON, schemas.ReadyResponse),),
    ),
    Operation(
        "get",
        "/api/v1/status",
        "Role, database, PRAGMAs, migrations, versions.",
        None,
        schemas.StatusResponse,
        errors=(401,),
    ),
    Operation(
        "post",
        "/api/v1/query",
        "Run one read-only statement.",
        schemas.QueryRequest,
        schemas.QueryResponse,
        errors=(*_BODY_ERRORS, 408, 503),
    ),
    Operation(
        "post",
        "/api/v1/execute",
        "Run statements in one transaction (all or nothing).",
        schemas.ExecuteRequest,
        {"anyOf": [schemas.ExecuteResponse, schemas.PendingExecuteResponse]},
        errors=(*_BODY_ERRORS, 408, 503),
        headers=((idempotency.HEADER, idempotency.KEY_SCHEMA),),
    ),
    Operation(
        "post",
        "/api/v1/sync",
        "Replica: run a sync now and answer where the replica is after it.",
        None,
        schemas.SyncResponse,
        errors=(401, 403, 503),
    ),
    Operation(
        "get",
        "/api/v1/outbox",
        "Local-first: the queue of writes not yet decided by the primary.",
        None,
        schemas.OutboxResponse,
        errors=(401, 404),
    ),
    Operation(
        "get",
        "/api/v1/outbox/{write_id}",
        "Local-first: one queued write, its local and primary outcome.",
        None,
        schemas.OutboxEntry,
        errors=(401, 404),
    ),
    Operation(
        "get",
        "/api/v1/conflicts",
        "Local-first: writes the primary refused, with its error.",
        None,
        schemas.ConflictList,
        errors=(401, 404),
    ),
    Operation(
        "post",
        "/api/v1/conflicts/{write_id}/retry",
        "Local-first: queue a conflict's statements again as a new write.",
        None,
        schemas.RetryResponse,
        errors=(400, 401, 403, 404, 503),
    ),
    Operation(
        "delete",
        "/api/v1/conflicts/{write_id}",
        "Local-first: drop a conflict.",
        None,
        schemas.DiscardResponse,
        errors=(401, 403, 404, 503),
    ),
    Operation("get", "/metrics", "Prometheus metrics.", None, None, errors=(401,), response_type=TEXT),
    Operation("get", "/openapi.json", "This document.", None, None, errors=(401,)),
    # --- vector collections -----------------------------------------------------------------------------
    Operation(
        "get",
        "/api/v1/collections",
        "List vector collections.",
        None,
        vectors.CollectionList,
        errors=(401,),
    ),
    Operation(
        "get",
        "/api/v1/collections/{name}",
        "One collection: its spec, state and build progress.",
        None,
        vectors.CollectionInfo,
        errors=(401, 404),
    ),
    Operation(
        "put",
        "/api/v1/collections/{name}",
        "Create or replace a collection (201 new, 200 unchanged, 202 rebuilding).",
        vectors.CollectionSpec,
        vectors.CollectionInfo,
        ok=(200, 201, 202),
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
    ),
    Operation(
        "delete",
        "/api/v1/collections/{name}",
        "Drop a collection and its index files.",
        None,
        None,
        errors=(401, 403, 404),
    ),
    Operation(
        "post",
        "/api/v1/collections/{name}/rebuild",
        "Rebuild a collection's index from its table.",
        None,
        vectors.CollectionInfo,
        ok=(202,),
        errors=(401, 403, 404, 503),
    ),
    Operation(
        "post",
        "/api/v1/collections/{name}/search",
        "k nearest neighbours of one vector (`vector`) or of each of several (`vectors`).",
        vectors.SearchRequest,
        None,
        errors=(400, 401, 404, 413, 415, 422, 503),
        other=((200, JSON, {"anyOf": [vectors.SearchResult, vectors.SearchBatchResult]}),),
    ),
]

# --- full-text collections: the same shape as the vector routes -------------------------------------------
OPERATIONS += [
    Operation("get", "/api/v1/text", "List full-text collections.", None, text.TextCollectionList, errors=(401,)),
    Operation(
        "get",
        "/api/v1/text/{name}",
        "One full-text collection: its spec, state and build progress.",
        None,
        text.TextCollectionInfo,
        errors=(401, 404),
    ),
    Operation(
        "put",
        "/api/v1/text/{name}",
        "Create or replace a full-text collection (201 new, 200 unchanged, 202 rebuilding).",
        text.TextSpec,
        text.TextCollectionInfo,
        ok=(200, 201, 202),
        errors=(400, 401, 403, 404, 409, 413, 415, 422, 503),
    ),
    Operation("delete", "/api/v1/text/{name}", "Drop a full-text collection.", None, None, errors=(401, 403, 404)),
    Operation(
        "post",
        "/api/v1/text/{name}/rebuild",
        "Rebuild a full-text collection from its table.",
        None,
        text.TextCollectionInfo,
        ok=(202,),
        errors=(401, 403, 404, 503),
    ),
    Operation(
        "post",
        "/api/v1/text/{name}/search",
        "Full-text (FTS5) or hybrid (with a vector collection) search.",
        text.SearchRequest,
        text.SearchResult,
        errors=(400, 401, 404, 413, 415, 422, 503),
    ),
]

# --- backups (edgenode.backup_http) ------------------------------------------------------------------------
OPERATIONS += [
    Operation(
        "post",
        "/api/v1/backup",
        "Online backup of the node's database into DATA_DIR/backups/ (body optional): path, position, row counts.",
        backup.BackupRequest,
        backup.BackupReport,
        errors=(*_BODY_ERRORS, 409, 503),
    ),
]

# --- live changes (edgenode.changes); /api/v1/changes/ws is the same stream over a WebSocket ---------------
# (documented as its upgrade GET; a GET without the upgrade is 426)
OPERATIONS += [
    Operation(
        "get",
        "/api/v1/changes",
        "Server-Sent Events of captured tables' row changes: ?tables=a,b[&where=col=value][&after=cursor] "
        "(or Last-Event-ID); each event's data is a ChangeEvent; ends with event: resync or error.",
        None,
        changes.ChangeEvent,
        errors=(400, 401, 503),
        response_type="text/event-stream",
    ),
    Operation(
        "get",
        "/api/v1/changes/ws",
        "WebSocket (GET with Upgrade: websocket; 101 Switching Protocols) of the same stream: each text message "
        "is a ChangeEvent; ends with a {event: resync|error, reason, message} message and a close (1000; 1008 "
        "refused or token revoked; 1009 for a client message over 16 KiB). Resume with ?after=. Without the "
        "upgrade: 426.",
        None,
        changes.ChangeEvent,
        ok=(101,),
        errors=(401, 426),
        query=(
            ("tables", True, {"type": "string", "description": "Comma-separated captured tables."}),
            ("where", False, {"type": "string", "description": "One equality, column=value."}),
            ("after", False, {"type": "string", "description": "Cursor to resume after."}),
            ("access_token", False, {"type": "string", "description": "The token, for browsers (no headers)."}),
        ),
    ),
    Operation(
        "get",
        "/api/v1/changes/tables",
        "Tables captured for the change stream, and the stream's position.",
        None,
        changes.CapturedTables,
        errors=(401,),
    ),
    Operation(
        "put",
        "/api/v1/changes/tables/{table}",
        "Capture a table for the change stream (again after ALTER TABLE: new columns).",
        None,
        changes.CaptureResponse,
        errors=(400, 401, 403, 404, 503),
    ),
    Operation(
        "delete",
        "/api/v1/changes/tables/{table}",
        "Stop capturing a table.",
        None,
        changes.CaptureResponse,
        errors=(400, 401, 403, 503),
    ),
]

_HRANA_ERRORS = (400, 401, 413, 415, 503)
HRANA_OPERATIONS: list[Operation] = [
    Operation(
        "post",
        "/v1/execute",
        "Hrana over HTTP v1: one statement.",
        hrana.V1ExecuteReq,
        hrana.V1ExecuteResp,
        errors=_HRANA_ERRORS,
        error=hrana.HttpErrorBody,
    ),
    Operation(
        "post",
        "/v1/batch",
        "Hrana over HTTP v1: a batch.",
        hrana.V1BatchReq,
        hrana.V1BatchResp,
        errors=_HRANA_ERRORS,
        error=hrana.HttpErrorBody,
    ),
    Operation("get", "/v2", "Hrana v2 probe.", None, hrana.VersionProbe, errors=()),
    Operation(
        "post",
        "/v2/pipeline",
        "Hrana v2 pipeline on a stream (baton).",
        hrana.PipelineReqBody,
        hrana.PipelineRespBody,
        errors=_HRANA_ERRORS,
        error=hrana.HttpErrorBody,
    ),
    Operation("get", "/v3", "Hrana v3 probe.", None, hrana.VersionProbe, errors=()),
    Operation(
        "post",
        "/v3/pipeline",
        "Hrana v3 pipeline on a stream (baton).",
        hrana.PipelineReqBody,
        hrana.PipelineRespBody,
        errors=_HRANA_ERRORS,
        error=hrana.HttpErrorBody,
    ),
    Operation(
        "post",
        "/v3/cursor",
        "Hrana v3 cursor: a batch streamed as newline-delimited JSON (CursorRespBody, then CursorEntry lines).",
        hrana.CursorReqBody,
        {"type": "string"},
        response_type=TEXT,
        errors=_HRANA_ERRORS,
        error=hrana.HttpErrorBody,
    ),
    Operation(
        "get",
        "/v3-protobuf",
        "Hrana v3 with Protobuf: not served (404 tells clients to use JSON).",
        None,
        None,
        ok=(),
        errors=(404,),
        error=hrana.HttpErrorBody,
    ),
]


def build(
    operations: list[Operation], routes: list[BaseRoute] | None = None, title: str = "edgenode"
) -> dict[str, Any]:
    """The document for those of `operations` that `routes` mount (all of them without routes)."""
    if routes is not None:
        mounted = mounted_operations(routes)
        operations = [op for op in operations if (op.method, op.path) in mounted]
    types: dict[type, None] = {}  # by identity: msgspec names same-named types by module
    for op in operations:
        for body in (op.request, op.response, op.error, *(b for _, _, b in op.other)):
            for kind in _types_in(body):
                types[kind] = None
    ordered = sorted(types, key=lambda kind: (kind.__name__, kind.__module__))
    refs, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    ref = dict(zip(ordered, refs, strict=True))

    def schema(body: Body) -> dict[str, Any]:
        if isinstance(body, dict):
            return {key: [schema(b) for b in value] if key == "anyOf" else value for key, value in body.items()}
        return ref[body]

    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {"summary": op.summary, "responses": {}}
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": _UINT32 if name in op.integer_params else {"type": "string"},
            }
            for name in re.findall(r"{(\w+)}", op.path)
        ]
        parameters += [{"name": name, "in": "header", "required": False, "schema": kind} for name, kind in op.headers]
        parameters += [{"name": name, "in": "query", "required": req, "schema": kind} for name, req, kind in op.query]
        if parameters:
            entry["parameters"] = parameters
        if op.request is not None:
            entry["requestBody"] = {"required": True, "content": {op.request_type: {"schema": schema(op.request)}}}
        for status in op.ok:
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {op.response_type: {"schema": schema(op.response)}}
            entry["responses"][str(status)] = ok
        for status, content_type, body in op.other:
            described: dict[str, Any] = {"description": "See summary"}
            if body is not None:
                described["content"] = {content_type: {"schema": schema(body)}}
            entry["responses"][str(status)] = described
        for status in op.errors:
            entry["responses"][str(status)] = {"description": "Error", "content": {JSON: {"schema": schema(op.error)}}}
        entry["security"] = [{"bearer": []}] if op.auth else []
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }


def _types_in(body: Body) -> list[type]:
    if body is None:
        return []
    if isinstance(body, dict):
        return [kind for b in body.get("anyOf", []) for kind in _types_in(b)]
    return [body]


def mounted_operations(routes: list[BaseRoute]) -> set[tuple[str, str]]:
    """(method, path) of every mounted route (HEAD, which Starlette adds to GET, aside)."""
    return {
        (method.lower(), route.path)
        for route in routes
        if isinstance(route, Route)
        for method in (route.methods or ())
        if method != "HEAD"
    }
