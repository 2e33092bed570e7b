"""The real Python libSQL clients against the HranaServer: `libsql` (v3 pipeline + cursor) and
`libsql-client` 0.3 (HTTP v1)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import libsql
import libsql_client
import pytest

from tests.test_hrana_support import ROOT, WRITE_TOKEN, Served, free_port, serve


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[str]:
    # The libsql binding holds the GIL while it waits for the network, so the server needs its own process.
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.test_hrana_support", str(tmp_path / "db"), str(port)],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, "test server exited"
        assert time.monotonic() < deadline, "test server did not start"
        try:
            httpx.get(url + "/v3", timeout=1)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_libsql_remote_connection_reads_writes_and_uses_transactions(server_process: str) -> None:
    conn = libsql.connect(server_process, auth_token=WRITE_TOKEN)
    conn.execute("create table t(id integer primary key, a text, b blob)")
    conn.execute("insert into t(a, b) values (?, ?)", ("x", b"\x00\x01\xff"))
    conn.commit()
    assert conn.execute("select id, a, b from t").fetchall() == [(1, "x", b"\x00\x01\xff")]
    conn.execute("BEGIN")
    conn.execute("insert into t(a) values ('in transaction')")
    assert conn.in_transaction
    assert conn.execute("select count(*) from t").fetchall() == [(2,)]
    conn.execute("ROLLBACK")
    assert conn.execute("select count(*) from t").fetchall() == [(1,)]
    with pytest.raises(ValueError, match="no such table"):
        conn.execute("select * from nowhere")
    stats = httpx.get(server_process + "/test/stats").json()
    assert stats["requests"]["v3/pipeline"] > 0
    assert stats["requests"]["v3/cursor"] > 0


def test_libsql_remote_connection_with_a_bad_token_fails_with_401(server_process: str) -> None:
    conn = libsql.connect(server_process, auth_token="wrong")
    with pytest.raises(ValueError, match="401"):
        conn.execute("select 1")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)


def test_libsql_client_v1_execute_batch_and_errors(served: Served) -> None:
    with libsql_client.create_client_sync(served.url, auth_token=WRITE_TOKEN) as client:
        client.execute("create table t(a integer unique, b blob)")
        inserted = client.execute("insert into t values (?, ?)", [2**62 + 1, b"\x01\x02"])
        assert inserted.rows_affected == 1
        assert inserted.last_insert_rowid == 1
        results = client.batch([("insert into t values (?, ?)", [2, None]), "select a, b from t order by a"])
        assert [tuple(row) for row in results[1].rows] == [(2, None), (2**62 + 1, b"\x01\x02")]
        with pytest.raises(libsql_client.LibsqlError) as exc:
            client.batch(["insert into t values (3, null)", "insert into t values (2, null)"])
        assert exc.value.code == "SQLITE_CONSTRAINT"
        # The failed batch was one transaction: its first insert was rolled back too.
        assert client.execute("select count(*) from t").rows[0][0] == 2
        with pytest.raises(libsql_client.LibsqlError) as exc:
            client.execute("select * from nowhere")
        assert exc.value.code == "SQLITE_UNKNOWN"
