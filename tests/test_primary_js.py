"""npm `@libsql/client` against the primary's own Hrana backend over `/v2/pipeline`, and what it wrote
reaching an embedded replica."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import libsql
import pytest

from tests.procs import ROOT, start

JS_CLIENT = ROOT / "tests" / "js" / "node_modules" / "@libsql" / "client"
TOKEN = "js-token"

SCRIPT = r"""
const { createClient } = require(process.env.LIBSQL_CLIENT);
(async () => {
  const out = {};
  const db = createClient({ url: process.env.URL, authToken: process.env.TOKEN, intMode: "bigint" });
  await db.execute("create table t(id integer primary key, a integer unique, b blob)");
  const ins = await db.execute({
    sql: "insert into t(a, b) values (?, ?)",
    args: [9223372036854775807n, new Uint8Array([0, 1, 255])],
  });
  out.insert = [ins.rowsAffected, String(ins.lastInsertRowid)];
  const row = (await db.execute("select a, b from t")).rows[0];
  out.select = [String(row.a), Array.from(new Uint8Array(row.b))];
  await db.batch(["insert into t(a) values (2)", "insert into t(a) values (3)"], "write");
  try { await db.batch(["insert into t(a) values (4)", "insert into t(a) values (2)"], "write"); out.batch = "ok"; }
  catch (e) { out.batch = e.code; }
  const tx = await db.transaction("write");
  await tx.execute("insert into t(a) values (10)");
  await tx.rollback();
  const tx2 = await db.transaction("write");
  await tx2.execute("insert into t(a) values (20)");
  await tx2.commit();
  const rtx = await db.transaction("read");
  try { await rtx.execute("insert into t(a) values (30)"); out.readWrite = "allowed"; }
  catch (e) { out.readWrite = e.code; }
  await rtx.close();
  await db.executeMultiple("insert into t(a) values (40); insert into t(a) values (41);");
  out.as = (await db.execute("select a from t order by a")).rows.map((r) => String(r.a));
  db.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


@pytest.mark.skipif(shutil.which("node") is None or not JS_CLIENT.is_dir(), reason="node or @libsql/client missing")
def test_npm_libsql_client_writes_to_the_primary_and_replicas_see_it(tmp_path: Path) -> None:
    proc = start(["primary", "--data-dir", str(tmp_path / "p"), "--auth-token", TOKEN, "--no-migrate"], tmp_path)
    try:
        script = tmp_path / "client.cjs"
        script.write_text(SCRIPT)
        env = {**os.environ, "URL": proc.url, "TOKEN": TOKEN, "LIBSQL_CLIENT": str(JS_CLIENT)}
        run = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        out = json.loads(run.stdout)
        assert out["insert"] == [1, "1"]
        assert out["select"] == ["9223372036854775807", [0, 1, 255]]
        assert out["batch"] == "SQLITE_CONSTRAINT"
        assert out["readWrite"] == "SQLITE_READONLY"
        expected = ["2", "3", "20", "40", "41", "9223372036854775807"]
        assert out["as"] == expected
        replica = libsql.connect(str(tmp_path / "r.db"), sync_url=proc.url, auth_token=TOKEN)
        replica.sync()
        # Read as text: the libsql binding would round a 64-bit integer through a float.
        local = replica.execute("SELECT CAST(a AS TEXT) FROM t ORDER BY a").fetchall()
        assert [r[0] for r in local] == expected
    finally:
        proc.stop()
