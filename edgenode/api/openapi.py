"""/openapi.json, built from the msgspec types the routes really decode and encode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from edgenode import __version__
from edgenode.api import schemas


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    request: type | None = None
    response: type | None = None
    auth: bool = True
    errors: tuple[int, ...] = (400, 401, 403, 422)
    response_type: str = "application/json"


OPERATIONS: list[Operation] = [
    Operation("get", "/health", "Liveness: the process answers.", None, schemas.HealthResponse, auth=False, errors=()),
    Operation(
        "get",
        "/ready",
        "Readiness: database open and within max lag (503 otherwise).",
        None,
        schemas.ReadyResponse,
        auth=False,
        errors=(503,),
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
        errors=(400, 401, 403, 408, 413, 422),
    ),
    Operation(
        "post",
        "/api/v1/execute",
        "Run statements in one transaction (all or nothing).",
        schemas.ExecuteRequest,
        schemas.ExecuteResponse,
        errors=(400, 401, 403, 413, 422, 503),
    ),
    Operation("get", "/metrics", "Prometheus metrics.", None, None, errors=(401,), response_type="text/plain"),
    Operation("get", "/openapi.json", "This document.", None, None, errors=(401,)),
]


def build(extra: list[Operation] | None = None) -> dict[str, Any]:
    operations = OPERATIONS + (extra or [])
    types = {t for op in operations for t in (op.request, op.response) if t is not None}
    types.add(schemas.ErrorResponse)
    ordered = sorted(types, key=lambda t: t.__name__)
    refs, components = msgspec.json.schema_components(ordered, ref_template="#/components/schemas/{name}")
    ref = dict(zip(ordered, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {"summary": op.summary, "responses": {}}
        if op.request is not None:
            entry["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref[op.request]}}}
        ok: dict[str, Any] = {"description": "OK"}
        if op.response is not None:
            ok["content"] = {op.response_type: {"schema": ref[op.response]}}
        entry["responses"]["200"] = ok
        for status in op.errors:
            entry["responses"][str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": ref[schemas.ErrorResponse]}},
            }
        entry["security"] = [{"bearer": []}] if op.auth else []
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgenode", "version": __version__},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
