"""The real libSQL clients, driven against a node's Hrana endpoints (shared by the standalone and
replica tests): npm `@libsql/client` (v2 pipeline), PyPI `libsql` remote mode (v3 pipeline + cursor),
PyPI `libsql-client` (HTTP v1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import libsql
import libsql_client
import pytest

from tests.procs import ROOT

JS_DIR = ROOT / "tests" / "js"
JS_CLIENT = JS_DIR / "node_modules" / "@libsql" / "client"
needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not JS_CLIENT.is_dir(), reason="node or tests/js/node_modules missing"
)

# Each run uses its own table (TABLE) so runs against one node do not see each other.
JS_SCRIPT = r"""
const { createClient } = require("@libsql/client");
const T = process.env.TABLE;
const code = (e) => e.code || (e.cause && e.cause.code) || String(e);
(async () => {
  const out = {};
  const db = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  await db.execute(`create table ${T}(id integer primary key, a integer unique, b blob, c real, d text)`);
  const ins = await db.execute({
    sql: `insert into ${T}(a, b, c, d) values (?, ?, ?, ?)`,
    args: [9223372036854775807n, new Uint8Array([0, 1, 255]), 1.5, "héllo"],
  });
  out.insert = [ins.rowsAffected, String(ins.lastInsertRowid)];
  const sel = await db.execute(`select a, b, c, d, typeof(a) as t from ${T}`);
  const r = sel.rows[0];
  out.select = [String(r.a), Array.from(new Uint8Array(r.b)), r.c, r.d, r.t];
  out.columnTypes = sel.columnTypes;
  out.min = String((await db.execute(
    { sql: `select a from ${T} where a > ?`, args: [-9223372036854775808n] })).rows[0].a);
  const named = await db.execute({ sql: "select :x as x, $y as y", args: { x: 1n, y: "z" } });
  out.named = [String(named.rows[0].x), named.rows[0].y];
  await db.batch([{ sql: `insert into ${T}(a) values (?)`, args: [2n] }, `insert into ${T}(a) values (3)`], "write");
  try {
    await db.batch([`insert into ${T}(a) values (4)`, `insert into ${T}(a) values (2)`], "write");
    out.batchError = null;
  } catch (e) { out.batchError = code(e); }
  const tx = await db.transaction("write");
  await tx.execute(`insert into ${T}(a) values (10)`);
  out.inTx = String((await tx.execute(`select count(*) as n from ${T}`)).rows[0].n);
  await tx.rollback();
  const tx2 = await db.transaction("write");
  await tx2.execute(`insert into ${T}(a) values (20)`);
  await tx2.commit();
  const rtx = await db.transaction("read");
  out.readTx = String((await rtx.execute(`select count(*) as n from ${T}`)).rows[0].n);
  try {
    await rtx.execute(`insert into ${T}(a) values (11)`);
    out.readTxWrite = "allowed";
  } catch (e) { out.readTxWrite = code(e); }
  await rtx.close();
  await db.executeMultiple(`insert into ${T}(a) values (40); insert into ${T}(a) values (41);`);
  try { await db.execute(`select 1; select 2`); out.many = "allowed"; } catch (e) { out.many = code(e); }
  try { await db.execute(`select * from ${T}_nowhere`); } catch (e) { out.error = [code(e), e.message]; }
  out.as = (await db.execute(`select a from ${T} order by a`)).rows.map((row) => String(row.a));
  db.close();

  const ro = createClient({ url: process.env.URL, authToken: process.env.RO_TOKEN, intMode: "bigint" });
  out.roRead = String((await ro.execute(`select count(*) as n from ${T}`)).rows[0].n);
  try { await ro.execute(`insert into ${T}(a) values (50)`); out.roWrite = "allowed"; }
  catch (e) { out.roWrite = code(e); }
  try { await ro.batch([`insert into ${T}(a) values (51)`], "write"); out.roBatch = "allowed"; }
  catch (e) { out.roBatch = code(e); }
  ro.close();

  const anon = createClient({ url: process.env.URL, intMode: "bigint" });
  try { await anon.execute("select 1"); out.anon = "allowed"; } catch (e) { out.anon = e.message; }
  anon.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""

JS_EXPECTED_VALUES = ["2", "3", "20", "40", "41", "9223372036854775807"]


def run_js_client(url: str, token: str, ro_token: str, table: str, tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / f"{table}.cjs"
    script.write_text(JS_SCRIPT)
    # NODE_PATH: the script lives in tmp_path, the client in tests/js/node_modules.
    env = {**os.environ, "URL": url, "TOKEN": token, "RO_TOKEN": ro_token, "TABLE": table}
    env["NODE_PATH"] = str(JS_DIR / "node_modules")
    run = subprocess.run(["node", str(script)], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def check_js_client(out: dict[str, Any]) -> None:
    """What every node (standalone or replica) must answer to the script above."""
    assert out["insert"] == [1, "1"]
    assert out["select"] == ["9223372036854775807", [0, 1, 255], 1.5, "héllo", "integer"]
    assert out["columnTypes"] == ["INTEGER", "BLOB", "REAL", "TEXT", ""]
    assert out["min"] == "9223372036854775807"
    assert out["named"] == ["1", "z"]
    assert out["batchError"] == "SQLITE_CONSTRAINT"
    assert out["inTx"] == "4"
    assert out["readTx"] == "4"
    assert out["readTxWrite"] == "SQLITE_READONLY"
    assert out["many"] == "SQL_MANY_STATEMENTS"
    assert out["error"][0] == "SQLITE_UNKNOWN" and "no such table" in out["error"][1]
    assert out["as"] == JS_EXPECTED_VALUES
    assert out["roRead"] == "6"
    assert out["roWrite"] == "SQLITE_READONLY"
    assert out["roBatch"] == "SQLITE_READONLY"
    assert "UNAUTHORIZED" in out["anon"]  # the 401 body reaches the JS user as the message


def exercise_libsql_remote(url: str, token: str, table: str) -> None:
    """PyPI `libsql` in remote mode: writes, reads, a rolled-back transaction, errors surfacing."""
    conn = libsql.connect(url, auth_token=token)
    conn.execute(f"create table {table}(id integer primary key, a text, b blob, n integer)")
    conn.execute(f"insert into {table}(a, b, n) values (?, ?, ?)", ("x", b"\x00\x01\xff", 2**31 - 1))
    conn.commit()
    assert conn.execute(f"select id, a, b, n from {table}").fetchall() == [(1, "x", b"\x00\x01\xff", 2**31 - 1)]
    conn.execute("BEGIN")
    conn.execute(f"insert into {table}(a) values ('in transaction')")
    assert conn.in_transaction
    assert conn.execute(f"select count(*) from {table}").fetchall() == [(2,)]
    conn.execute("ROLLBACK")
    assert not conn.in_transaction
    assert conn.execute(f"select count(*) from {table}").fetchall() == [(1,)]
    with pytest.raises(ValueError, match="no such table"):
        conn.execute(f"select * from {table}_nowhere")
    with pytest.raises(ValueError, match="UNIQUE constraint failed"):
        conn.execute(f"insert into {table}(id, a) values (1, 'again')")
    conn.rollback()
    # Still usable after errors.
    assert conn.execute(f"select a from {table}").fetchall() == [("x",)]


def exercise_libsql_client_v1(url: str, token: str, table: str) -> None:
    """PyPI `libsql-client` over http:// (Hrana v1 `/v1/execute` and `/v1/batch`)."""
    with libsql_client.create_client_sync(url, auth_token=token) as client:
        client.execute(f"create table {table}(a integer unique, b blob)")
        inserted = client.execute(f"insert into {table} values (?, ?)", [2**62 + 1, b"\x01\x02"])
        assert inserted.rows_affected == 1
        assert inserted.last_insert_rowid == 1
        results = client.batch(
            [(f"insert into {table} values (?, ?)", [2, None]), f"select a, b from {table} order by a"]
        )
        assert [tuple(row) for row in results[1].rows] == [(2, None), (2**62 + 1, b"\x01\x02")]
        with pytest.raises(libsql_client.LibsqlError) as exc:
            client.batch([f"insert into {table} values (3, null)", f"insert into {table} values (2, null)"])
        assert exc.value.code == "SQLITE_CONSTRAINT"
        # The failed batch was one transaction: its first insert was rolled back too.
        assert client.execute(f"select count(*) from {table}").rows[0][0] == 2
        with pytest.raises(libsql_client.LibsqlError) as exc:
            client.execute(f"select * from {table}_nowhere")
        assert exc.value.code == "SQLITE_UNKNOWN"
