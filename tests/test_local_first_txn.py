"""Hrana interactive transactions on a local-first node (docs/local-first.md §7), with a real primary,
a real node and real clients (the project's Hrana client, npm @libsql/client): with the primary stopped a
transaction runs on the node, reads its own writes, commits as ONE queued write, and reaches the primary
as one transaction when it returns; ROLLBACK and a dropped stream queue nothing; a transaction the
primary refuses becomes one conflict, none of its writes applied."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import HranaClient
from tests.local_first_support import LF, conflicts, converge, outbox
from tests.procs import ROOT
from tests.test_replica_support import (
    AUTH,
    NODE_TOKEN,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)

SCHEMA = (
    "CREATE TABLE acct (id TEXT PRIMARY KEY, balance INTEGER NOT NULL)",
    "INSERT INTO acct VALUES ('a', 100), ('b', 0)",
    "CREATE TABLE uniq (v TEXT UNIQUE)",
)
JS_CLIENT = ROOT / "tests" / "js" / "node_modules" / "@libsql" / "client"
JS_SCRIPT = r"""
const { createClient } = require(process.env.LIBSQL_CLIENT);
(async () => {
  const out = {};
  const db = createClient({ url: process.env.URL, authToken: process.env.TOKEN });
  const tx = await db.transaction("write");
  await tx.execute("update acct set balance = balance - 5 where id = 'a'");
  await tx.execute("update acct set balance = balance + 5 where id = 'b'");
  out.inside = (await tx.execute("select balance from acct order by id")).rows.map((r) => Number(r.balance));
  await tx.commit();
  const tx2 = await db.transaction("write");
  await tx2.execute("update acct set balance = 0");
  await tx2.rollback();
  await db.batch([
    "update acct set balance = balance + 1 where id = 'a'",
    "update acct set balance = balance - 1 where id = 'b'",
  ], "write");
  out.after = (await db.execute("select balance from acct order by id")).rows.map((r) => Number(r.balance));
  db.close();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_a_transaction_with_the_primary_away_commits_here_as_one_write_and_reaches_the_primary_whole(
    tmp_path: Path,
) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    try:
        wait_ready(node)
        # The primary takes 'mine' while the node is down, then goes away: the node never learns it.
        node.stop()
        primary_write(primary, "INSERT INTO uniq VALUES ('mine')")
        primary.stop()
        node.start()
        with HranaClient(node.url, NODE_TOKEN, timeout=15) as client:
            with client.stream() as stream:
                stream.execute("BEGIN IMMEDIATE")
                assert not stream.is_autocommit()
                stream.execute("UPDATE acct SET balance = balance - 30 WHERE id = 'a'")
                stream.execute("UPDATE acct SET balance = balance + 30 WHERE id = 'b'")
                stream.execute("CREATE TABLE audit (note TEXT)")
                stream.execute("INSERT INTO audit VALUES (?)", ["moved 30"])  # uses what the transaction created
                with pytest.raises(HranaError):
                    stream.execute("INSERT INTO nope VALUES (1)")  # fails alone; the transaction goes on
                # Reads inside see the transaction's own writes.
                assert stream.execute("SELECT balance FROM acct ORDER BY id").rows == [[70], [30]]
                stream.execute("COMMIT")
                assert stream.is_autocommit()
            state = outbox(node)
            assert state["pending"] == 1  # the whole transaction is ONE queued write
            with client.stream() as stream:
                stream.execute("BEGIN")
                stream.execute("UPDATE acct SET balance = 0")
                stream.execute("ROLLBACK")
            with client.stream() as stream:
                stream.execute("BEGIN")
                stream.execute("UPDATE acct SET balance = -1")
                # the stream closes mid-transaction: rolled back
            # Meanwhile other requests were served again (the connection's lease was given back).
            assert rows(node, "SELECT balance FROM acct ORDER BY id") == [[70], [30]]
            # A transaction that will lose a unique value on the primary: one conflict, nothing of it applied.
            with client.stream() as stream:
                stream.execute("BEGIN")
                stream.execute("INSERT INTO uniq VALUES ('mine')")
                stream.execute("UPDATE acct SET balance = balance + 1000 WHERE id = 'b'")
                stream.execute("COMMIT")
        assert outbox(node)["pending"] == 2
        if shutil.which("node") is not None and JS_CLIENT.is_dir():
            script = tmp_path / "tx.cjs"
            script.write_text(JS_SCRIPT)
            env = {**os.environ, "URL": node.url, "TOKEN": NODE_TOKEN, "LIBSQL_CLIENT": str(JS_CLIENT)}
            done = subprocess.run(["node", str(script)], env=env, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout) == {"inside": [65, 1035], "after": [66, 1034]}
            assert outbox(node)["pending"] == 4  # the transaction and the batch: one queued write each
        primary.start()
        converge(primary, node)
        # The transaction that took 'mine' is one conflict, wholly refused: its +1000 is not applied.
        listed = conflicts(node)
        assert len(listed) == 1 and len(listed[0]["statements"]) == 2
        assert "UNIQUE" in listed[0]["error"]["message"]
        expected = [(66,), (34,)] if JS_CLIENT.is_dir() and shutil.which("node") else [(70,), (30,)]
        assert primary_rows(primary, "SELECT balance FROM acct ORDER BY id") == expected
        assert primary_rows(primary, "SELECT note FROM audit") == [("moved 30",)]
        assert rows(node, "SELECT * FROM pragma_quick_check") == [["ok"]]
    finally:
        node.stop()
        primary.stop()


def test_a_stuck_transaction_is_rolled_back_after_transaction_timeout_and_frees_the_node(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF, "--transaction-timeout", "1")
    try:
        wait_ready(node)
        with HranaClient(node.url, NODE_TOKEN, timeout=15) as client:
            stuck = client.stream()
            stuck.execute("BEGIN")
            stuck.execute("UPDATE acct SET balance = 7 WHERE id = 'a'")
            # Other requests wait for the connection, at most until the watchdog ends the transaction.
            response = httpx.post(
                node.url + "/api/v1/query", json={"sql": "SELECT balance FROM acct WHERE id = 'a'"}, headers=AUTH
            )
            assert response.json()["rows"] == [[100]]
            with pytest.raises(HranaError, match="rolled back"):
                stuck.execute("COMMIT")
            stuck.close()
        assert outbox(node)["pending"] == 0
        converge(primary, node)
    finally:
        node.stop()
        primary.stop()


def test_a_kill_9_at_a_transaction_commit_or_inside_it_loses_nothing_acknowledged_and_applies_nothing_twice(
    tmp_path: Path,
) -> None:
    """N2 of docs/local-first.md §6 at a transaction's COMMIT (queued durably, the replica not yet
    committed, no answer): after the restart it is applied once. A kill while a transaction is open:
    nothing of it is queued or applied."""
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    try:
        wait_ready(node)
        node.stop()
        node.env = {"EDGENODE_CRASH_AT": "N2"}
        node.start()
        wait_ready(node)
        with HranaClient(node.url, NODE_TOKEN, timeout=15) as client, client.stream() as stream:
            stream.execute("BEGIN")
            stream.execute("INSERT INTO uniq VALUES ('at-commit')")
            stream.execute("UPDATE acct SET balance = balance + 1 WHERE id = 'a'")
            with pytest.raises(HranaError):
                stream.execute("COMMIT")  # the connection's process died at N2: no answer
        assert "edgenode: crash point N2 " in node.log()
        node.kill()
        node.env = {}
        node.start()
        wait_ready(node)
        with HranaClient(node.url, NODE_TOKEN, timeout=15) as client:
            open_txn = client.stream()
            open_txn.execute("BEGIN")
            open_txn.execute("INSERT INTO uniq VALUES ('never-committed')")
            node.kill()  # mid-transaction
            node.start()
            wait_ready(node)
        converge(primary, node)
        assert primary_rows(primary, "SELECT v FROM uniq ORDER BY v") == [("at-commit",)]
        assert primary_rows(primary, "SELECT balance FROM acct WHERE id = 'a'") == [(101,)]
        assert rows(node, "SELECT * FROM pragma_quick_check") == [["ok"]]
        assert conflicts(node) == []
    finally:
        node.stop()
        primary.stop()
