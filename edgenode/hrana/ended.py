"""Answering a client that ends a transaction the server already rolled back.

When a stream expires holding a transaction (idle timeout, or `transaction_timeout`), the server
rolls it back and closes the stream; its baton then gets `STREAM_EXPIRED`. Clients whose stream
state only moves on a successful response never recover from that: PyPI `libsql` (0.1.x, remote
mode) keeps its implicit transaction across calls and, after the expiry, sends every later request
with the dead baton, `rollback()` included (ROLLBACK + get_autocommit + close), so the connection
stays broken until it is recreated.

A pipeline on such a baton that only rolls back, asks for autocommit or closes the stream is
answered as it would have been: the transaction is rolled back (it was), the stream is in autocommit
and then closed (baton null), so the client opens a fresh stream next time. Anything else on the
baton still gets `STREAM_EXPIRED`: a COMMIT or a statement must learn that the transaction is lost.
"""

from __future__ import annotations

import re

from edgenode.hrana import protocol as p

_ROLLBACK = re.compile(r"^\s*ROLLBACK(?:\s+TRANSACTION)?\s*;?\s*$", re.IGNORECASE)


def _rollback(stmt: p.Stmt) -> bool:
    return stmt.sql is not None and _ROLLBACK.match(stmt.sql) is not None


def _empty() -> p.StmtResult:
    return p.StmtResult(cols=[], rows=[], affected_row_count=0, last_insert_rowid=None)


def answer_rollback(requests: list[p.StreamRequest]) -> list[p.StreamResult] | None:
    """Results for a pipeline that only rolls back / asks autocommit / closes; None for anything else."""
    results: list[p.StreamResult] = []
    rolled_back = False
    for request in requests:
        response: p.StreamResponse
        if isinstance(request, p.ExecuteReq) and _rollback(request.stmt):
            response, rolled_back = p.ExecuteResp(result=_empty()), True
        elif (
            isinstance(request, p.BatchReq)
            and request.batch.steps
            and all(step.condition is None and _rollback(step.stmt) for step in request.batch.steps)
        ):
            count = len(request.batch.steps)
            result = p.BatchResult(step_results=[_empty() for _ in range(count)], step_errors=[None] * count)
            response, rolled_back = p.BatchResp(result=result), True
        elif isinstance(request, p.GetAutocommitReq):
            response = p.GetAutocommitResp(is_autocommit=True)
        elif isinstance(request, p.CloseReq):
            response = p.CloseResp()
        else:
            return None
        results.append(p.StreamResultOk(response=response))
    return results if rolled_back else None
