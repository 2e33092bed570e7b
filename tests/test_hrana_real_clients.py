"""The real libSQL clients against the HranaServer: `libsql` (v3 pipeline + cursor), `libsql-client` 0.3
(HTTP v1) and, when node and tests/js/node_modules are present, npm `@libsql/client` (v2 pipeline)."""

from __future__ import annotations

import json
import os
import shutil
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


JS_CLIENT = ROOT / "tests" / "js" / "node_modules" / "@libsql" / "client"
JS_SCRIPT = r"""
const { createClient } = require(process.env.LIBSQL_CLIENT);
(async () => {
  const out = {};
  const db = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  await db.execute("create table t(id integer primary key, a integer unique, b blob, c real, d text)");
  const ins = await db.execute({
    sql: "insert into t(a, b, c, d) values (?, ?, ?, ?)",
    args: [9223372036854775807n, new Uint8Array([0, 1, 255]), 1.5, "héllo"],
  });
  out.insert = { rowsAffected: ins.rowsAffected, lastInsertRowid: String(ins.lastInsertRowid) };
  const sel = await db.execute("select a, b, c, d from t");
  const r = sel.rows[0];
  out.select = { a: String(r.a), b: Array.from(new Uint8Array(r.b)), c: r.c, d: r.d, columns: sel.columns };
  const named = await db.execute({ sql: "select :x as x, $y as y", args: { x: 1n, y: "z" } });
  out.named = [String(named.rows[0].x), named.rows[0].y];
  await db.batch([{ sql: "insert into t(a) values (?)", args: [2n] }, "insert into t(a) values (3)"], "write");
  try {
    await db.batch(["insert into t(a) values (4)", "insert into t(a) values (2)"], "write");
    out.batchError = null;
  } catch (e) { out.batchError = e.code; }
  const tx = await db.transaction("write");
  await tx.execute("insert into t(a) values (10)");
  const inTx = await tx.execute("select count(*) as n from t");
  out.inTx = String(inTx.rows[0].n);
  await tx.rollback();
  const rtx = await db.transaction("read");
  out.readTx = String((await rtx.execute("select count(*) as n from t")).rows[0].n);
  try {
    await rtx.execute("insert into t(a) values (11)");
    out.readTxWrite = "allowed";
  } catch (e) { out.readTxWrite = e.code || String(e); }
  await rtx.close();
  try { await db.execute("select * from nowhere"); } catch (e) { out.error = { code: e.code, message: e.message }; }
  out.count = String((await db.execute("select count(*) as n from t")).rows[0].n);
  db.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None or not JS_CLIENT.is_dir(), reason="node or @libsql/client missing")
def test_npm_libsql_client_over_v2_pipeline(served: Served, tmp_path: Path) -> None:
    script = tmp_path / "client.cjs"
    script.write_text(JS_SCRIPT)
    env = {**os.environ, "URL": served.url, "TOKEN": WRITE_TOKEN, "LIBSQL_CLIENT": str(JS_CLIENT)}
    run = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["insert"] == {"rowsAffected": 1, "lastInsertRowid": "1"}
    assert out["select"] == {
        "a": "9223372036854775807",
        "b": [0, 1, 255],
        "c": 1.5,
        "d": "héllo",
        "columns": ["a", "b", "c", "d"],
    }
    assert out["named"] == ["1", "z"]
    assert out["batchError"] == "SQLITE_CONSTRAINT"
    assert out["inTx"] == "4"
    assert out["readTx"] == "3"
    assert out["readTxWrite"] == "SQLITE_READONLY"
    assert out["error"]["code"] == "SQLITE_UNKNOWN"
    assert "no such table" in out["error"]["message"]
    assert out["count"] == "3"
    assert served.hrana.request_counts["v2/pipeline"] > 0
    assert served.hrana.open_streams == 0
