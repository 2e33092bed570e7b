"""The write path of a replica node: one atomic Hrana request to the primary.

`/api/v1/execute` statements are checked and bound here exactly as on a standalone node, then sent
as ONE pipeline request (BEGIN; each statement if the previous succeeded; COMMIT; ROLLBACK if the
commit did not happen). A keyed write (edgenode.idempotency) claims and records its key in that
same request. Values travel in Hrana's encoding, so 64-bit integers stay exact. Making
the write visible locally (read-your-writes) is the database's job, after this returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from edgenode import values
from edgenode.analysis import Analysis
from edgenode.database import DatabaseError, ExecResult, SQLError, Unavailable
from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import BatchStepError, HranaClient, HranaConnectionError, HranaHTTPError
from edgenode.idempotency import KeyedWrite, run_keyed_hrana

Prepared = list[tuple[str, list[Any], Analysis]]


def exact_params(analysis: Analysis, params: Sequence[Any] | dict[str, Any] | None, where: str) -> list[Any]:
    """Positional values for Hrana, without the libsql binding's 32-bit workaround (already validated)."""
    if params is None:
        ordered: list[Any] = []
    elif isinstance(params, dict):
        given = {str(k).lstrip(":@$"): v for k, v in params.items()}
        ordered = [given[name] for name in analysis.param_names if name is not None]
    else:
        ordered = list(params)
    try:
        return [values.from_json(v, f"{where}.params[{i}]") for i, v in enumerate(ordered)]
    except values.ValueError_ as exc:
        raise DatabaseError(str(exc)) from exc


class PrimaryWriter:
    """Sends writes to the primary; blocking (run it in a worker thread)."""

    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.client = HranaClient(url, token, timeout=timeout)
        self.writes = 0
        self.failures = 0

    def close(self) -> None:
        self.client.close()

    def write(
        self, statements: list[tuple[str, list[Any]]], prepared: Prepared, keyed: KeyedWrite | None = None
    ) -> list[ExecResult]:
        try:
            if keyed is None:
                results = self.client.execute_batch_atomic(statements)
            else:
                results, keyed.replayed = run_keyed_hrana(self.client, statements, keyed)
        except BatchStepError as exc:
            where = f"statements[{exc.index}]: " if exc.index is not None else ""
            raise SQLError(f"{where}{exc.message}", index=exc.index) from exc
        except HranaConnectionError as exc:
            self.failures += 1
            cause = exc.__cause__
            if isinstance(cause, httpx.ConnectError):
                raise Unavailable(
                    f"the primary at {self.url} is unreachable ({cause}); the write was not applied. "
                    "Reads still work from this node's replica."
                ) from exc
            raise Unavailable(
                f"the primary at {self.url} did not answer within {self.timeout:g} s ({type(cause).__name__}); "
                "the write may or may not have been applied. Reads still work from this node's replica."
            ) from exc
        except HranaHTTPError as exc:
            self.failures += 1
            if exc.status in (401, 403):
                raise Unavailable(
                    f"the primary refused this node's credentials ({exc.status}); check --primary-token"
                ) from exc
            raise Unavailable(f"the primary could not take the write: {exc}") from exc
        except HranaError as exc:
            self.failures += 1
            raise Unavailable(f"the primary could not take the write: {exc.message} ({exc.code})") from exc
        self.writes += 1
        out = []
        for (_, _, analysis), result in zip(prepared, results, strict=True):
            out.append(
                ExecResult(
                    rows_affected=result.affected_row_count if analysis.is_dml else 0,
                    last_insert_rowid=result.last_insert_rowid if analysis.is_insert else None,
                )
            )
        return out
