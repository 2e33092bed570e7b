"""A small synchronous Hrana over HTTP client (v2/v3 pipeline) on httpx.

Used by the node to forward writes to a primary. Results come back as the backend dataclasses
(`StmtResult`, `DescribeResult`) and statement errors as `HranaError`, so a forwarding backend can
pass both through unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Self

import httpx
import msgspec

from edgenode.hrana import protocol as p
from edgenode.hrana.backend import Col, DescribeResult, HranaError, StmtResult
from edgenode.hrana.batch import Args, make_stmt
from edgenode.hrana.values import to_python
from edgenode.tls import client_context

# A statement for batch helpers: bare SQL, or SQL with its arguments.
Statement = str | tuple[str, Args]

_pipeline_decoder = msgspec.json.Decoder(p.PipelineRespBody)
_error_decoder = msgspec.json.Decoder(dict[str, object])


class HranaHTTPError(HranaError):
    """The server answered with an HTTP error (the stream, if any, is gone)."""

    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(f"HTTP {status}: {message}", code or f"HTTP_{status}")
        self.status = status


class HranaConnectionError(HranaError):
    """The server could not be reached, or the connection broke mid-request (in which case the
    request may or may not have run: only the caller knows whether retrying is safe)."""

    def __init__(self, message: str):
        super().__init__(message, "CONNECTION_ERROR")


class BatchStepError(HranaError):
    """A statement of an atomic batch failed; `index` is its position in the statements given
    (None when COMMIT itself failed). The transaction was rolled back."""

    def __init__(self, message: str, code: str, index: int | None):
        super().__init__(message, code)
        self.index = index


def stmt_result_from_proto(result: p.StmtResult) -> StmtResult:
    return StmtResult(
        cols=[Col(col.name, col.decltype) for col in result.cols],
        rows=[[to_python(value) for value in row] for row in result.rows],
        affected_row_count=result.affected_row_count,
        last_insert_rowid=None if result.last_insert_rowid is None else int(result.last_insert_rowid),
        rows_read=result.rows_read,
        rows_written=result.rows_written,
        query_duration_ms=result.query_duration_ms,
        replication_index=replication_index(result.replication_index),
    )


def replication_index(value: str | int | None) -> int | None:
    """A result's `replication_index` (sqld sends a decimal string); None when absent or not a u64."""
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 <= number < 2**64 else None


def _error(error: p.Error) -> HranaError:
    return HranaError(error.message, error.code or "UNKNOWN")


class HranaClient:
    """Talks to one Hrana server. Thread-safe for separate streams (httpx.Client is)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        version: int = 3,
        transport: httpx.BaseTransport | None = None,
    ):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self.version = version
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport, verify=client_context())

    def stream(self) -> ClientStream:
        return ClientStream(self)

    def execute(self, sql: str, args: Args = None) -> StmtResult:
        """One statement on a fresh stream that is closed in the same request."""
        with self.stream() as stream:
            return stream.execute(sql, args, close=True)

    def execute_batch_atomic(self, statements: Sequence[Statement]) -> list[StmtResult]:
        """Run statements in one transaction, as ONE request: BEGIN; each statement if the previous one
        succeeded; COMMIT if the last succeeded; ROLLBACK if COMMIT did not succeed.

        Returns one result per statement, or raises BatchStepError naming the failing statement."""
        return self.commit_batch(statements)[0]

    def commit_batch(self, statements: Sequence[Statement]) -> tuple[list[StmtResult], int | None]:
        """`execute_batch_atomic`, also returning the COMMIT's `replication_index` (None if the server
        gives none)."""
        steps: list[p.BatchStep] = [p.BatchStep(stmt=make_stmt("BEGIN", want_rows=False))]
        for statement in statements:
            sql, args = (statement, None) if isinstance(statement, str) else statement
            steps.append(p.BatchStep(stmt=make_stmt(sql, args), condition=p.OkCond(step=len(steps) - 1)))
        commit = len(steps)
        steps.append(p.BatchStep(stmt=make_stmt("COMMIT", want_rows=False), condition=p.OkCond(step=commit - 1)))
        steps.append(
            p.BatchStep(stmt=make_stmt("ROLLBACK", want_rows=False), condition=p.NotCond(cond=p.OkCond(step=commit)))
        )
        with self.stream() as stream:
            result = stream.batch_raw(steps, close=True)
        for index, error in enumerate(result.step_errors):
            if error is not None:
                statement_index = index - 1 if 1 <= index < commit else None
                where = {0: "BEGIN", commit: "COMMIT", commit + 1: "ROLLBACK"}.get(index, f"statement {index - 1}")
                raise BatchStepError(f"{where} failed: {error.message}", error.code or "UNKNOWN", statement_index)
        results = result.step_results[1:commit]
        committed = result.step_results[commit]
        if any(r is None for r in results) or committed is None:
            raise HranaError("the server skipped a statement of the batch without an error", "HRANA_PROTO_ERROR")
        return [stmt_result_from_proto(r) for r in results if r is not None], replication_index(
            committed.replication_index
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, url: str, body: p.PipelineReqBody) -> p.PipelineRespBody:
        try:
            response = self._http.post(
                url, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise HranaConnectionError(f"cannot reach {url}: {exc}") from exc
        if response.status_code >= 300:
            message, code = response.text.strip() or response.reason_phrase, None
            try:
                parsed = _error_decoder.decode(response.content)
                message = str(parsed.get("message") or parsed.get("error") or message)
                code = str(parsed["code"]) if parsed.get("code") else None
            except msgspec.DecodeError:
                pass
            raise HranaHTTPError(response.status_code, message, code)
        try:
            return _pipeline_decoder.decode(response.content)
        except msgspec.DecodeError as exc:
            raise HranaError(f"malformed pipeline response: {exc}", "HRANA_PROTO_ERROR") from exc


class ClientStream:
    """One server-side stream (a connection that can hold a transaction across requests).

    Requests on a stream are serial; the baton from each response is sent with the next request."""

    def __init__(self, client: HranaClient):
        self._client = client
        self._baton: str | None = None
        self._base_url = client.base_url
        self._started = False
        self.closed = False
        # Known autocommit state after the last request (v3 piggybacks get_autocommit on each request,
        # as the libsql clients do), so a forwarding backend's is_autocommit() costs no round trip.
        self.autocommit: bool | None = None

    def pipeline(self, requests: list[p.StreamRequest]) -> list[p.StreamResult]:
        """Send requests in one HTTP round trip; results in the same order."""
        if self.closed:
            raise HranaError("the stream is closed", "STREAM_CLOSED")
        url = f"{self._base_url}/v{self._client.version}/pipeline"
        try:
            response = self._client._post(url, p.PipelineReqBody(requests=requests, baton=self._baton))
        except HranaError:
            # The server drops a stream it answered with an HTTP error; so do we.
            self.closed = True
            raise
        self._started = True
        self._baton = response.baton
        if response.base_url:
            self._base_url = response.base_url.rstrip("/")
        if response.baton is None:
            self.closed = True
        if len(response.results) != len(requests):
            raise HranaError("the server returned a wrong number of results", "HRANA_PROTO_ERROR")
        return response.results

    def _one(self, request: p.StreamRequest, close: bool) -> p.StreamResponse:
        requests: list[p.StreamRequest] = [request]
        track = not close and self._client.version >= 3 and not isinstance(request, p.GetAutocommitReq)
        if track:
            requests.append(p.GetAutocommitReq())
        if close:
            requests.append(p.CloseReq())
        results = self.pipeline(requests)
        self.autocommit = None
        if track and isinstance(results[1], p.StreamResultOk):
            tracked = results[1].response
            if isinstance(tracked, p.GetAutocommitResp):
                self.autocommit = tracked.is_autocommit
        result = results[0]
        if isinstance(result, p.StreamResultError):
            raise _error(result.error)
        return result.response

    def execute(self, sql: str, args: Args = None, *, want_rows: bool = True, close: bool = False) -> StmtResult:
        response = self._one(p.ExecuteReq(stmt=make_stmt(sql, args, want_rows=want_rows)), close)
        assert isinstance(response, p.ExecuteResp)
        return stmt_result_from_proto(response.result)

    def batch(self, statements: Sequence[Statement], *, close: bool = False) -> list[StmtResult | HranaError | None]:
        """Unconditional batch: each statement's result, its error, or None if skipped."""
        steps = []
        for statement in statements:
            sql, args = (statement, None) if isinstance(statement, str) else statement
            steps.append(p.BatchStep(stmt=make_stmt(sql, args)))
        result = self.batch_raw(steps, close=close)
        return [
            stmt_result_from_proto(r) if r is not None else (_error(e) if e is not None else None)
            for r, e in zip(result.step_results, result.step_errors, strict=True)
        ]

    def batch_raw(self, steps: list[p.BatchStep], *, close: bool = False) -> p.BatchResult:
        """A batch with conditions, as protocol structs."""
        response = self._one(p.BatchReq(batch=p.Batch(steps=steps)), close)
        assert isinstance(response, p.BatchResp)
        if len(response.result.step_results) != len(steps):
            raise HranaError("the server returned a wrong number of step results", "HRANA_PROTO_ERROR")
        return response.result

    def sequence(self, sql: str) -> None:
        self._one(p.SequenceReq(sql=sql), close=False)

    def describe(self, sql: str) -> DescribeResult:
        response = self._one(p.DescribeReq(sql=sql), close=False)
        assert isinstance(response, p.DescribeResp)
        r = response.result
        return DescribeResult(
            params=[param.name for param in r.params],
            cols=[Col(c.name, c.decltype) for c in r.cols],
            is_explain=r.is_explain,
            is_readonly=r.is_readonly,
        )

    def is_autocommit(self) -> bool:
        """Whether no transaction is open; answered from the last response when known (v3)."""
        if self.autocommit is not None:
            return self.autocommit
        if not self._started:
            return True
        response = self._one(p.GetAutocommitReq(), close=False)
        assert isinstance(response, p.GetAutocommitResp)
        self.autocommit = response.is_autocommit
        return response.is_autocommit

    def close(self) -> None:
        """Close the stream on the server (rolling back an open transaction). Idempotent; a stream
        that never sent a request has nothing to close."""
        if self.closed or not self._started:
            self.closed = True
            return
        try:
            self.pipeline([p.CloseReq()])
        finally:
            self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.close()
        except HranaError:
            # Do not mask the original error; the server expires the stream anyway.
            if exc is None:
                raise
