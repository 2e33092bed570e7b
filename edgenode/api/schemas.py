"""Request and response bodies of the REST API, as msgspec types (also the source of /openapi.json)."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

# A parameter: null, number, string, or {"base64": "..."} for a blob.
Param = Any
Params = list[Param] | dict[str, Param] | None
# An empty statement is refused by the decoder (422 naming the field), so the schema says so too.
Sql = Annotated[str, msgspec.Meta(min_length=1)]


class QueryRequest(msgspec.Struct, forbid_unknown_fields=True):
    sql: Sql
    params: Params = None
    # Freshness bounds for replica nodes: wait (bounded) until the replica reaches them. A write's
    # response names its (generation, frame); frames count within a generation, so give both.
    min_frame: int | None = None
    min_generation: int | None = None
    max_staleness_ms: int | None = None


class QueryResponse(msgspec.Struct):
    columns: list[str]
    rows: list[list[Any]]
    elapsed_ms: float
    decltypes: list[str | None] = []


class Statement(msgspec.Struct, forbid_unknown_fields=True):
    sql: Sql
    params: Params = None
    # The rows this statement must change where the write commits (the primary, for a replica node);
    # otherwise the whole write fails with 409 expect_rows_mismatch (local-first: it becomes a conflict).
    expect_rows: Annotated[int, msgspec.Meta(ge=0)] | None = None


class ExecuteRequest(msgspec.Struct, forbid_unknown_fields=True):
    statements: list[Statement]


class ExecResult(msgspec.Struct):
    rows_affected: int
    last_insert_rowid: int | None


class ExecuteResponse(msgspec.Struct):
    results: list[ExecResult]
    elapsed_ms: float
    # Where the write is visible (replica mode): a later read can demand `min_frame`.
    generation: int | None = None
    frame: int | None = None


class PendingExecuteResponse(ExecuteResponse):
    """A local-first node: the write committed here and is queued for the primary; `results` are the
    local outcome (GET /api/v1/outbox/{write_id} shows the primary's once it decided)."""

    write_id: str = ""
    pending: bool = True


class OutboxResponse(msgspec.Struct):
    """`GET /api/v1/outbox` on a local-first node."""

    pending: int
    pushed: int
    failed: int
    oldest_pending_s: float | None
    pushed_not_pulled: int
    pulled_hwm: int
    node_id: str
    last_error: str | None = None
    push_failures: int = 0
    push_error: str | None = None
    paused: str | None = None
    last_push_at: float | None = None


class OutboxStatement(msgspec.Struct):
    sql: str
    params: list[Any] | dict[str, Any]


class OutboxEntry(msgspec.Struct):
    """One local-first write: `state` pending, pushed (applied on the primary, not yet pulled here),
    applied, or conflict (with the primary's `error`)."""

    write_id: str
    state: str
    statements: list[OutboxStatement]
    local_results: list[list[int | None]]
    created_at: float
    primary_results: list[list[int | None]] | None = None
    pushed_at: float | None = None
    attempts: int = 0
    last_error: str | None = None
    local: str | None = None
    error: dict[str, str] | None = None
    decided_at: float | None = None


class ConflictList(msgspec.Struct):
    conflicts: list[OutboxEntry]


class RetryResponse(msgspec.Struct):
    write_id: str
    pending: bool


class DiscardResponse(msgspec.Struct):
    discarded: str


class ErrorBody(msgspec.Struct):
    code: str
    message: str


class ErrorResponse(msgspec.Struct):
    error: ErrorBody


class HealthResponse(msgspec.Struct):
    status: str


class ReadyResponse(msgspec.Struct):
    status: str
    reason: str | None = None


class SyncResponse(msgspec.Struct):
    """`POST /api/v1/sync` on a replica node: where the replica is after the sync it waited for."""

    generation: int | None
    frame: int | None
    frames_applied: int
    duration_ms: float
    state: str


class StatusResponse(msgspec.Struct):
    role: str
    database: dict[str, Any]
    migrations: list[dict[str, Any]]
    versions: dict[str, str]
    uptime_seconds: float
    components: dict[str, Any] = {}
