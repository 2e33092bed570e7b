"""Test scaffolding for the Hrana package: a tiny apsw backend and a real uvicorn server in a thread.

Lives in a `test_hrana_*` module (no tests of its own) so it stays within the hrana paths.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import apsw
import apsw.ext
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request

from edgenode.auth import Access, AuthError
from edgenode.hrana.backend import Backend, Col, DescribeResult, HranaError, Session, StmtResult, Value
from edgenode.hrana.server import HranaServer
from edgenode.hrana.sql import (
    hrana_error_from_sqlite,
    is_begin_readonly,
    single_statement,
    split_statements,
    strip_named_arg_prefixes,
)

_DML = re.compile(r"^\s*(insert|update|delete|replace)\b", re.IGNORECASE)
_INSERT = re.compile(r"^\s*(insert|replace)\b", re.IGNORECASE)

ROOT = Path(__file__).resolve().parent.parent
WRITE_TOKEN = "write-token"
READ_TOKEN = "read-token"


class ApswSession(Session):
    def __init__(self, path: str, access: Access, log: list[str]):
        self.conn = apsw.Connection(path)
        self.conn.set_busy_timeout(200)
        self.access = access
        self.log = log
        self.closed = False
        self.read_only_txn = False

    def execute(self, sql: str, args: list[Value] | dict[str, Value], want_rows: bool) -> StmtResult:
        try:
            stmt = single_statement(sql)
            if self.read_only_txn and self.conn.get_autocommit():
                self.conn.execute("pragma query_only = 0")
                self.read_only_txn = False
            if is_begin_readonly(stmt):
                # libSQL's read transaction: a deferred one that refuses writes until it ends.
                self.conn.execute("BEGIN DEFERRED")
                self.conn.execute("pragma query_only = 1")
                self.read_only_txn = True
                return StmtResult(cols=[], rows=[], affected_row_count=0, last_insert_rowid=None)
            info = apsw.ext.query_info(self.conn, stmt)
            if not self.access.can_write and not info.is_readonly:
                raise HranaError("this session is read-only", "SQLITE_READONLY")
            cols = [Col(d[0], d[1]) for d in info.description or ()]
            bindings = strip_named_arg_prefixes(args) if isinstance(args, dict) else tuple(args)
            before = self.conn.total_changes()
            rows = [list(row) for row in self.conn.cursor().execute(stmt, bindings)]
        except HranaError:
            raise
        except apsw.Error as exc:
            raise hrana_error_from_sqlite(exc) from exc
        return StmtResult(
            cols=cols,
            rows=rows if want_rows else [],
            affected_row_count=self.conn.total_changes() - before if _DML.match(stmt) else 0,
            last_insert_rowid=self.conn.last_insert_rowid() if _INSERT.match(stmt) else None,
        )

    def describe(self, sql: str) -> DescribeResult:
        stmt = single_statement(sql)
        try:
            info = apsw.ext.query_info(self.conn, stmt)
        except apsw.Error as exc:
            raise hrana_error_from_sqlite(exc) from exc
        return DescribeResult(
            params=[_with_prefix(stmt, name) for name in info.bindings_names],
            cols=[Col(d[0], d[1]) for d in info.description or ()],
            is_explain=bool(info.is_explain),
            is_readonly=info.is_readonly,
        )

    def sequence(self, sql: str) -> None:
        for stmt in split_statements(sql):
            self.execute(stmt, [], want_rows=False)

    def is_autocommit(self) -> bool:
        return self.conn.get_autocommit()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.log.append("close")
            if not self.conn.get_autocommit():
                self.log.append("rollback")
            self.conn.close()


def _with_prefix(sql: str, name: str | None) -> str | None:
    """apsw reports binding names without their prefix; Hrana's describe wants it back."""
    if name is None:
        return None
    match = re.search(r"([:@$])" + re.escape(name) + r"\b", sql)
    return (match.group(1) if match else ":") + name


class ApswBackend(Backend):
    def __init__(self, path: Path):
        self.path = str(path)
        self.log: list[str] = []
        conn = apsw.Connection(self.path)
        conn.execute("pragma journal_mode=wal")
        conn.close()

    def open_session(self, access: Access) -> Session:
        self.log.append(f"open {access.value}")
        return ApswSession(self.path, access, self.log)


def authenticate(request: Request) -> Access:
    header = request.headers.get("authorization")
    if header == f"Bearer {WRITE_TOKEN}":
        return Access.WRITE
    if header == f"Bearer {READ_TOKEN}":
        return Access.READ
    raise AuthError("invalid token")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    url: str
    hrana: HranaServer
    backend: ApswBackend  # or whichever backend the test passed
    http: httpx.Client

    def pipeline(self, requests: list[dict], baton: str | None = None, version: int = 2) -> httpx.Response:
        return self.http.post(f"/v{version}/pipeline", json={"baton": baton, "requests": requests})

    def ok(self, requests: list[dict], baton: str | None = None, version: int = 2) -> dict:
        response = self.pipeline(requests, baton, version)
        assert response.status_code == 200, response.text
        return response.json()


def serve(tmp_path: Path, backend: Backend | None = None, **kwargs: object) -> Iterator[Served]:
    backend = backend or ApswBackend(tmp_path / "test.db")
    hrana = HranaServer(backend, authenticate, **kwargs)  # type: ignore[arg-type]
    app = Starlette(routes=hrana.routes())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    url = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=url, headers={"authorization": f"Bearer {WRITE_TOKEN}"}, timeout=10) as http:
        try:
            yield Served(url, hrana, backend, http)  # type: ignore[arg-type]
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            hrana.close()


def stmt(sql: str, *args: dict, **extra: object) -> dict:
    return {"sql": sql, "args": list(args), **extra}


def integer(value: int) -> dict:
    return {"type": "integer", "value": str(value)}


def text(value: str) -> dict:
    return {"type": "text", "value": value}


def execute(sql: str, *args: dict, **extra: object) -> dict:
    return {"type": "execute", "stmt": stmt(sql, *args, **extra)}


def main() -> None:
    """`python -m tests.test_hrana_support DB PORT`: serve in a separate process, for clients that hold
    the GIL while they wait on the network (the libsql binding does) and so cannot share a process."""
    import sys

    from starlette.responses import JSONResponse
    from starlette.routing import Route

    db, port = Path(sys.argv[1]), int(sys.argv[2])
    hrana = HranaServer(ApswBackend(db), authenticate)

    async def stats(request: Request) -> JSONResponse:
        return JSONResponse({"requests": hrana.request_counts, "errors": hrana.error_counts})

    app = Starlette(routes=[*hrana.routes(), Route("/test/stats", stats)])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
