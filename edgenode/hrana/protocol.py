"""Hrana over HTTP wire types (JSON), as msgspec Structs.

Covers HTTP v1 (`/v1/execute`, `/v1/batch`), the v2/v3 pipeline and the v3 cursor. Unknown fields
are ignored (the spec requires forward compatibility); unknown `type` tags are rejected.
Integers travel as decimal strings and are checked to fit in i64 while decoding.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated

import msgspec

I64_MIN = -(2**63)
I64_MAX = 2**63 - 1

# Struct options shared by every tagged type: the tag lives in "type", like the spec's TypeScript unions.
_tagged = {"tag_field": "type"}


class Error(msgspec.Struct):
    message: str
    code: str | None = None


class HttpErrorBody(msgspec.Struct):
    """An error answered at the HTTP level: "message"/"code" for the Hrana clients, which read an
    Error there, and "error" (the same text) for our own REST conventions."""

    error: str
    message: str
    code: str


class VersionProbe(msgspec.Struct):
    """`GET /v2`, `GET /v3`: the protocol version served there."""

    hrana: str


# --- values -------------------------------------------------------------------------------------


class NullValue(msgspec.Struct, tag="null", **_tagged):
    pass


class IntegerValue(msgspec.Struct, tag="integer", **_tagged):
    # A string in the spec; a bare JSON integer is accepted too because some hand-written clients send one.
    value: str | int

    def __post_init__(self) -> None:
        try:
            number = int(self.value)
        except ValueError:
            raise ValueError(f"integer value {self.value!r} is not a decimal integer") from None
        if not I64_MIN <= number <= I64_MAX:
            raise ValueError(f"integer value {self.value} does not fit in 64 bits")


class FloatValue(msgspec.Struct, tag="float", **_tagged):
    # JSON cannot carry NaN or infinities; they are encoded as null, as sqld's serde does.
    value: float | None


class TextValue(msgspec.Struct, tag="text", **_tagged):
    value: str


class BlobValue(msgspec.Struct, tag="blob", **_tagged):
    base64: str

    def __post_init__(self) -> None:
        decode_base64(self.base64)


ProtoValue = NullValue | IntegerValue | FloatValue | TextValue | BlobValue


def decode_base64(text: str) -> bytes:
    """Standard base64, padded or not (sqld emits unpadded, most clients send padded)."""
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"blob is not valid base64: {exc}") from None


# --- statements and batches ---------------------------------------------------------------------

# A server's position after a statement, an opaque u64 that sqld sends as a decimal string (serde
# `option_u64_as_str`); requests may carry one back. Accepted as a string or a bare integer.
ReplicationIndex = str | int | None


class NamedArg(msgspec.Struct):
    name: str
    value: ProtoValue


class Stmt(msgspec.Struct):
    sql: str | None = None
    sql_id: int | None = None
    args: list[ProtoValue] | None = None
    named_args: list[NamedArg] | None = None
    want_rows: bool | None = None
    replication_index: ReplicationIndex = None


class OkCond(msgspec.Struct, tag="ok", **_tagged):
    step: Annotated[int, msgspec.Meta(ge=0)]


class ErrorCond(msgspec.Struct, tag="error", **_tagged):
    step: Annotated[int, msgspec.Meta(ge=0)]


class NotCond(msgspec.Struct, tag="not", **_tagged):
    cond: BatchCond


class AndCond(msgspec.Struct, tag="and", **_tagged):
    conds: list[BatchCond]


class OrCond(msgspec.Struct, tag="or", **_tagged):
    conds: list[BatchCond]


class IsAutocommitCond(msgspec.Struct, tag="is_autocommit", **_tagged):
    pass


BatchCond = OkCond | ErrorCond | NotCond | AndCond | OrCond | IsAutocommitCond


class BatchStep(msgspec.Struct):
    stmt: Stmt
    condition: BatchCond | None = None


class Batch(msgspec.Struct):
    steps: list[BatchStep]
    replication_index: ReplicationIndex = None


# --- results ------------------------------------------------------------------------------------


class Col(msgspec.Struct):
    name: str | None
    decltype: str | None = None


class StmtResult(msgspec.Struct):
    cols: list[Col]
    rows: list[list[ProtoValue]]
    affected_row_count: int
    last_insert_rowid: str | None
    rows_read: int = 0
    rows_written: int = 0
    query_duration_ms: float = 0.0
    replication_index: ReplicationIndex = None


class BatchResult(msgspec.Struct):
    step_results: list[StmtResult | None]
    step_errors: list[Error | None]
    replication_index: ReplicationIndex = None


class DescribeParam(msgspec.Struct):
    name: str | None


class DescribeResult(msgspec.Struct):
    params: list[DescribeParam]
    cols: list[Col]
    is_explain: bool
    is_readonly: bool


# --- HTTP v1 ------------------------------------------------------------------------------------


class V1ExecuteReq(msgspec.Struct):
    stmt: Stmt


class V1ExecuteResp(msgspec.Struct):
    result: StmtResult


class V1BatchReq(msgspec.Struct):
    batch: Batch


class V1BatchResp(msgspec.Struct):
    result: BatchResult


# --- pipeline requests --------------------------------------------------------------------------


class CloseReq(msgspec.Struct, tag="close", **_tagged):
    pass


class ExecuteReq(msgspec.Struct, tag="execute", **_tagged):
    stmt: Stmt


class BatchReq(msgspec.Struct, tag="batch", **_tagged):
    batch: Batch


class SequenceReq(msgspec.Struct, tag="sequence", **_tagged):
    sql: str | None = None
    sql_id: int | None = None
    replication_index: ReplicationIndex = None


class DescribeReq(msgspec.Struct, tag="describe", **_tagged):
    sql: str | None = None
    sql_id: int | None = None
    replication_index: ReplicationIndex = None


class StoreSqlReq(msgspec.Struct, tag="store_sql", **_tagged):
    sql_id: int
    sql: str


class CloseSqlReq(msgspec.Struct, tag="close_sql", **_tagged):
    sql_id: int


class GetAutocommitReq(msgspec.Struct, tag="get_autocommit", **_tagged):
    pass


StreamRequest = (
    CloseReq | ExecuteReq | BatchReq | SequenceReq | DescribeReq | StoreSqlReq | CloseSqlReq | GetAutocommitReq
)


class PipelineReqBody(msgspec.Struct):
    requests: list[StreamRequest]
    baton: str | None = None


class CursorReqBody(msgspec.Struct):
    batch: Batch
    baton: str | None = None


# --- pipeline responses -------------------------------------------------------------------------


class CloseResp(msgspec.Struct, tag="close", **_tagged):
    pass


class ExecuteResp(msgspec.Struct, tag="execute", **_tagged):
    result: StmtResult


class BatchResp(msgspec.Struct, tag="batch", **_tagged):
    result: BatchResult


class SequenceResp(msgspec.Struct, tag="sequence", **_tagged):
    pass


class DescribeResp(msgspec.Struct, tag="describe", **_tagged):
    result: DescribeResult


class StoreSqlResp(msgspec.Struct, tag="store_sql", **_tagged):
    pass


class CloseSqlResp(msgspec.Struct, tag="close_sql", **_tagged):
    pass


class GetAutocommitResp(msgspec.Struct, tag="get_autocommit", **_tagged):
    is_autocommit: bool


StreamResponse = (
    CloseResp | ExecuteResp | BatchResp | SequenceResp | DescribeResp | StoreSqlResp | CloseSqlResp | GetAutocommitResp
)


class StreamResultOk(msgspec.Struct, tag="ok", **_tagged):
    response: StreamResponse


class StreamResultError(msgspec.Struct, tag="error", **_tagged):
    error: Error


StreamResult = StreamResultOk | StreamResultError


class PipelineRespBody(msgspec.Struct):
    baton: str | None
    base_url: str | None
    results: list[StreamResult]


class CursorRespBody(msgspec.Struct):
    baton: str | None
    base_url: str | None


# --- cursor entries -----------------------------------------------------------------------------


class StepBeginEntry(msgspec.Struct, tag="step_begin", **_tagged):
    step: int
    cols: list[Col]


class StepEndEntry(msgspec.Struct, tag="step_end", **_tagged):
    affected_row_count: int
    last_insert_rowid: str | None
    rows_read: int = 0
    rows_written: int = 0
    query_duration_ms: float = 0.0


class RowEntry(msgspec.Struct, tag="row", **_tagged):
    row: list[ProtoValue]


class StepErrorEntry(msgspec.Struct, tag="step_error", **_tagged):
    step: int
    error: Error


class ErrorEntry(msgspec.Struct, tag="error", **_tagged):
    error: Error


CursorEntry = StepBeginEntry | StepEndEntry | RowEntry | StepErrorEntry | ErrorEntry
