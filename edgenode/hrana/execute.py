"""Running Hrana requests against a Session (synchronous: the server calls this in a worker thread)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from edgenode.hrana import protocol as p
from edgenode.hrana.backend import HranaError, Session, StmtResult, Value
from edgenode.hrana.values import from_python, to_python

MAX_STORED_SQL = 1000  # per stream; the JS client's cache stays far below this
# Conditions are walked recursively here, when they run, and when a replica forwards them: a bound
# keeps a deeply nested one (which decodes fine) from reaching Python's recursion limit on any of those.
MAX_COND_DEPTH = 32


class ProtocolError(Exception):
    """The request itself is malformed: answered with HTTP 400 before anything runs."""


def check_sql_source(sql: str | None, sql_id: int | None, where: str) -> None:
    if (sql is None) == (sql_id is None):
        raise ProtocolError(f"{where}: exactly one of `sql` and `sql_id` must be given")


def check_batch(batch: p.Batch, where: str = "batch") -> None:
    """Reject a batch whose conditions refer to a step that is not earlier than their own."""
    for index, step in enumerate(batch.steps):
        check_sql_source(step.stmt.sql, step.stmt.sql_id, f"{where} step {index}")
        if step.condition is not None:
            _check_cond(step.condition, index, where)


def _check_cond(cond: p.BatchCond, index: int, where: str, depth: int = 1) -> None:
    if depth > MAX_COND_DEPTH:
        raise ProtocolError(f"{where} step {index}: condition nested deeper than {MAX_COND_DEPTH} levels")
    if isinstance(cond, p.OkCond | p.ErrorCond):
        if cond.step >= index:
            raise ProtocolError(f"{where} step {index}: condition refers to step {cond.step}, which is not earlier")
    elif isinstance(cond, p.NotCond):
        _check_cond(cond.cond, index, where, depth + 1)
    elif isinstance(cond, p.AndCond | p.OrCond):
        for sub in cond.conds:
            _check_cond(sub, index, where, depth + 1)


def check_request(request: p.StreamRequest, index: int) -> None:
    where = f"request {index} ({type(request).__name__})"
    if isinstance(request, p.ExecuteReq):
        check_sql_source(request.stmt.sql, request.stmt.sql_id, where)
    elif isinstance(request, p.BatchReq):
        check_batch(request.batch, where)
    elif isinstance(request, p.SequenceReq | p.DescribeReq):
        check_sql_source(request.sql, request.sql_id, where)


def error_of(exc: BaseException) -> p.Error:
    if isinstance(exc, HranaError):
        return p.Error(message=exc.message, code=exc.code)
    return p.Error(message=str(exc) or type(exc).__name__, code="SQLITE_UNKNOWN")


def _call_args(stmt: p.Stmt) -> tuple[list[Value] | dict[str, Value], bool]:
    """A statement's arguments as Python values (named, else positional) and its want_rows."""
    args: list[Value] | dict[str, Value]
    if stmt.named_args:
        args = {arg.name: to_python(arg.value) for arg in stmt.named_args}
    else:
        args = [to_python(value) for value in stmt.args or ()]
    return args, True if stmt.want_rows is None else stmt.want_rows


def _answered(result: StmtResult, want_rows: bool, started: float) -> StmtResult:
    """A session's result as the client asked for it, with the time it took if the session gave none."""
    if not want_rows:
        result.rows = []
    if not result.query_duration_ms:
        result.query_duration_ms = (time.perf_counter() - started) * 1000.0
    return result


@dataclass
class StreamContext:
    """What one stream's requests run against: its session and its stored SQL texts."""

    session: Session | None
    sqls: dict[int, str] = field(default_factory=dict)
    on_error: Callable[[str], None] | None = None

    def resolve_sql(self, sql: str | None, sql_id: int | None) -> str:
        if sql is not None:
            return sql
        assert sql_id is not None
        try:
            return self.sqls[sql_id]
        except KeyError:
            raise HranaError(f"SQL text {sql_id} not found (store it with store_sql first)", "SQL_NOT_FOUND") from None

    def require_session(self) -> Session:
        if self.session is None:
            raise HranaError("the stream is closed", "STREAM_CLOSED")
        return self.session

    def report(self, error: p.Error) -> p.Error:
        if self.on_error is not None and error.code is not None:
            self.on_error(error.code)
        return error

    # --- statements -----------------------------------------------------------------------------

    def run_stmt(self, stmt: p.Stmt) -> StmtResult:
        session = self.require_session()
        sql = self.resolve_sql(stmt.sql, stmt.sql_id)
        if stmt.args and stmt.named_args:
            raise HranaError(
                "specifying both positional and named arguments is not supported", "ARGS_BOTH_POSITIONAL_AND_NAMED"
            )
        args, want_rows = _call_args(stmt)
        started = time.perf_counter()
        return _answered(session.execute(sql, args, want_rows), want_rows, started)

    def execute(self, stmt: p.Stmt) -> p.StmtResult:
        return stmt_result_to_proto(self.run_stmt(stmt))

    async def try_handle(self, request: p.StreamRequest) -> p.StreamResult | None:
        """`handle` on the event loop, for the requests a session can answer there without blocking
        (`Session.try_execute`, `Session.try_close`); None: run it with `handle` in a worker thread."""
        try:
            if isinstance(request, p.CloseReq):
                if self.session is not None and not self.session.try_close():
                    return None
                self.session = None
                return p.StreamResultOk(response=p.CloseResp())
            if not isinstance(request, p.ExecuteReq):
                return None
            stmt = request.stmt
            if stmt.args and stmt.named_args:
                return None  # `handle` words the error
            session = self.require_session()
            sql = self.resolve_sql(stmt.sql, stmt.sql_id)
            args, want_rows = _call_args(stmt)
            started = time.perf_counter()
            result = await session.try_execute(sql, args, want_rows)
            if result is None:
                return None
            result = _answered(result, want_rows, started)
            return p.StreamResultOk(response=p.ExecuteResp(result=stmt_result_to_proto(result)))
        except Exception as exc:
            return p.StreamResultError(error=self.report(error_of(exc)))

    def batch(self, batch: p.Batch) -> p.BatchResult:
        results: list[p.StmtResult | None] = []
        errors: list[p.Error | None] = []
        position: str | int | None = None
        for _index, outcome in self.run_steps(batch):
            if isinstance(outcome, StmtResult):
                proto = stmt_result_to_proto(outcome)
                results.append(proto)
                errors.append(None)
                position = proto.replication_index or position
            else:
                results.append(None)
                errors.append(outcome)
        # As sqld: the batch's position is the one after its last step that reported one.
        return p.BatchResult(step_results=results, step_errors=errors, replication_index=position)

    def run_steps(self, batch: p.Batch) -> Iterator[tuple[int, StmtResult | p.Error | None]]:
        """Run a batch step by step, yielding (index, result | error | None when skipped).

        Lazy so the cursor endpoint can stream each step as soon as it is done."""
        outcomes: list[bool | None] = []  # True ok, False error, None skipped
        for index, step in enumerate(batch.steps):
            try:
                run = step.condition is None or self.eval_cond(step.condition, outcomes)
            except Exception as exc:
                outcomes.append(False)
                yield index, self.report(error_of(exc))
                continue
            if not run:
                outcomes.append(None)
                yield index, None
                continue
            try:
                result = self.run_stmt(step.stmt)
            except Exception as exc:
                outcomes.append(False)
                yield index, self.report(error_of(exc))
            else:
                outcomes.append(True)
                yield index, result

    def eval_cond(self, cond: p.BatchCond, outcomes: list[bool | None]) -> bool:
        if isinstance(cond, p.OkCond):
            return outcomes[cond.step] is True
        if isinstance(cond, p.ErrorCond):
            return outcomes[cond.step] is False
        if isinstance(cond, p.NotCond):
            return not self.eval_cond(cond.cond, outcomes)
        if isinstance(cond, p.AndCond):
            return all(self.eval_cond(sub, outcomes) for sub in cond.conds)
        if isinstance(cond, p.OrCond):
            return any(self.eval_cond(sub, outcomes) for sub in cond.conds)
        return self.require_session().is_autocommit()

    # --- pipeline requests ----------------------------------------------------------------------

    def handle(self, request: p.StreamRequest) -> p.StreamResult:
        try:
            return p.StreamResultOk(response=self._dispatch(request))
        except Exception as exc:
            return p.StreamResultError(error=self.report(error_of(exc)))

    def _dispatch(self, request: p.StreamRequest) -> p.StreamResponse:
        if isinstance(request, p.ExecuteReq):
            return p.ExecuteResp(result=self.execute(request.stmt))
        if isinstance(request, p.BatchReq):
            return p.BatchResp(result=self.batch(request.batch))
        if isinstance(request, p.SequenceReq):
            self.require_session().sequence(self.resolve_sql(request.sql, request.sql_id))
            return p.SequenceResp()
        if isinstance(request, p.DescribeReq):
            described = self.require_session().describe(self.resolve_sql(request.sql, request.sql_id))
            return p.DescribeResp(
                result=p.DescribeResult(
                    params=[p.DescribeParam(name=name) for name in described.params],
                    cols=[p.Col(name=col.name, decltype=col.decltype) for col in described.cols],
                    is_explain=described.is_explain,
                    is_readonly=described.is_readonly,
                )
            )
        if isinstance(request, p.StoreSqlReq):
            if request.sql_id in self.sqls:
                raise HranaError(f"SQL text {request.sql_id} already exists", "SQL_STORE_EXISTS")
            if len(self.sqls) >= MAX_STORED_SQL:
                raise HranaError(f"the stream already stores {len(self.sqls)} SQL texts", "SQL_STORE_TOO_MANY")
            self.sqls[request.sql_id] = request.sql
            return p.StoreSqlResp()
        if isinstance(request, p.CloseSqlReq):
            self.sqls.pop(request.sql_id, None)
            return p.CloseSqlResp()
        if isinstance(request, p.GetAutocommitReq):
            return p.GetAutocommitResp(is_autocommit=self.require_session().is_autocommit())
        assert isinstance(request, p.CloseReq)
        self.close()
        return p.CloseResp()

    def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            session.close()


def stmt_result_to_proto(result: StmtResult) -> p.StmtResult:
    return p.StmtResult(
        cols=[p.Col(name=col.name, decltype=col.decltype) for col in result.cols],
        rows=[[from_python(value) for value in row] for row in result.rows],
        affected_row_count=result.affected_row_count,
        last_insert_rowid=None if result.last_insert_rowid is None else str(result.last_insert_rowid),
        rows_read=result.rows_read,
        rows_written=result.rows_written,
        query_duration_ms=result.query_duration_ms,
        replication_index=None if result.replication_index is None else str(result.replication_index),
    )


def cursor_entries(index: int, outcome: StmtResult | p.Error | None) -> list[p.CursorEntry]:
    """The cursor entries for one batch step (none for a skipped step, as the spec says)."""
    if outcome is None:
        return []
    if isinstance(outcome, p.Error):
        return [p.StepErrorEntry(step=index, error=outcome)]
    proto = stmt_result_to_proto(outcome)
    entries: list[p.CursorEntry] = [p.StepBeginEntry(step=index, cols=proto.cols)]
    entries.extend(p.RowEntry(row=row) for row in proto.rows)
    entries.append(
        p.StepEndEntry(
            affected_row_count=proto.affected_row_count,
            last_insert_rowid=proto.last_insert_rowid,
            rows_read=proto.rows_read,
            rows_written=proto.rows_written,
            query_duration_ms=proto.query_duration_ms,
        )
    )
    return entries
