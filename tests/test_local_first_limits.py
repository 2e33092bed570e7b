"""Local-first writes at the edges, with a real primary and real nodes: a write too large to push,
a push over the primary's body limit, a batch with nothing to push, the outbox API on nodes without
one, and the backup of a node holding pending writes (docs/local-first.md §3, §5)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import HranaClient
from tests.local_first_support import LF, conflicts, converge, outbox
from tests.procs import Proc, start
from tests.test_replica_support import (
    AUTH,
    NODE_TOKEN,
    eventually,
    module_primary_and_node,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)

SCHEMA = ("CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v TEXT)",)
shared, primary, node = module_primary_and_node("lf-limits", *SCHEMA, node_args=tuple(LF))


def post(node: Proc, *statements: tuple[str, list[Any]]) -> httpx.Response:
    body = {"statements": [{"sql": sql, "params": params} for sql, params in statements]}
    return httpx.post(node.url + "/api/v1/execute", json=body, headers=AUTH, timeout=60)


def test_a_write_whose_push_would_exceed_max_push_bytes_is_refused_at_once_and_later_writes_flow(
    primary: Proc, node: Proc
) -> None:
    # 20,000 inserts: a 1.5 MB request body, but a push of about 14 MB (each statement gets its
    # outcome record), over the primary's default 4 MiB body limit.
    huge = [("INSERT INTO t (k, v) VALUES (?, ?)", ["huge", f"row {i:08d}"]) for i in range(20_000)]
    before = outbox(node)
    refused = post(node, *huge)
    assert refused.status_code == 413, refused.text
    error = refused.json()["error"]
    assert error["code"] == "too_large"
    assert "max_push_bytes=4194304" in error["message"] and "split" in error["message"]
    assert rows(node, "SELECT count(*) FROM t WHERE k = 'huge'") == [[0]]  # nothing applied here
    assert outbox(node)["pending"] == 0 and outbox(node)["node_id"] == before["node_id"]
    # 2,000 of them fit: accepted, pushed, and the writes behind flow.
    assert post(node, *huge[:2000]).status_code == 200
    after = post(node, ("INSERT INTO t (k) VALUES ('after-huge')", []))
    assert after.status_code == 200, after.text
    eventually(lambda: primary_rows(primary, "SELECT count(*) FROM t WHERE k IN ('huge', 'after-huge')") == [(2001,)])


def test_a_transaction_whose_push_would_exceed_max_push_bytes_is_rolled_back_at_commit(node: Proc) -> None:
    pending = outbox(node)["pending"]
    with HranaClient(node.url, NODE_TOKEN, timeout=30) as client, client.stream() as stream:
        stream.execute("BEGIN")
        for i in range(3):  # each request fits the node's body limit; the three together do not fit one push
            stream.execute("INSERT INTO t (k, v) VALUES (?, ?)", [f"txn{i}", "z" * 1_500_000])
        with pytest.raises(HranaError, match="max_push_bytes"):
            stream.execute("COMMIT")
    assert rows(node, "SELECT count(*) FROM t WHERE k LIKE 'txn%'") == [[0]]
    assert outbox(node)["pending"] == pending


def test_a_batch_without_a_write_runs_as_a_read_and_queues_nothing(primary: Proc, node: Proc) -> None:
    issued = outbox(node)
    response = post(node, ("SELECT 1", []), ("SELECT count(*) FROM t WHERE k = ?", ["x"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert "write_id" not in body and body["results"] == [{"rows_affected": 0, "last_insert_rowid": None}] * 2
    bad = post(node, ("SELECT * FROM nowhere", []))
    assert bad.status_code == 400 and "nowhere" in bad.text
    assert outbox(node)["pushed"] == issued["pushed"] and outbox(node)["pending"] == 0
    # The next write gets the next write id: the reads took none.
    last = int(post(node, ("INSERT INTO t (k) VALUES ('after-read')", [])).json()["write_id"].rsplit("-", 1)[1])
    never = httpx.get(f"{node.url}/api/v1/outbox/{issued['node_id']}-{last + 1}", headers=AUTH)
    assert never.status_code == 404 and "never issued" in never.json()["error"]["message"]
    assert f"{issued['node_id']}-{last}" in never.json()["error"]["message"]


def test_a_local_first_node_says_why_it_does_not_enforce_foreign_keys(node: Proc) -> None:
    status = httpx.get(node.url + "/api/v1/status", headers=AUTH).json()
    reason = status["database"]["pragmas"]["refused"]["foreign_keys_on"]
    assert "local-first" in reason and "takes no local writes" not in reason


def test_nodes_without_an_outbox_answer_its_paths_with_the_reason_and_how_to_get_one(
    tmp_path: Path, primary: Proc
) -> None:
    standalone = start(["serve", "--data-dir", str(tmp_path / "alone"), "--auth-token", NODE_TOKEN], tmp_path, "alone")
    forward = start_node(tmp_path, primary, name="forward")
    try:
        for proc, why in ((standalone, "standalone"), (forward, "forwards its writes")):
            for method, path in (
                ("GET", "outbox"),
                ("GET", "outbox/x-1"),
                ("GET", "conflicts"),
                ("DELETE", "conflicts/x-1"),
            ):
                response = httpx.request(method, f"{proc.url}/api/v1/{path}", headers=AUTH)
                assert response.status_code == 404, (path, response.text)
                error = response.json()["error"]
                assert error["code"] == "not_local_first" and why in error["message"]
                assert "--write-mode local-first" in error["message"]
    finally:
        standalone.stop()
        forward.stop()


def test_a_push_over_the_primarys_body_limit_is_split_and_a_write_too_large_alone_becomes_a_conflict(
    tmp_path: Path,
) -> None:
    # The node believes the primary takes far more than it does (a misconfiguration the node can only
    # learn from the primary's 413).
    small_primary = start_primary(tmp_path, "--max-body-bytes", "200000")
    lf_node = start_node(tmp_path, small_primary, *LF, "--max-push-bytes", "100000000", name="lf")
    try:
        primary_write(small_primary, SCHEMA[0])
        wait_ready(lf_node)
        eventually(lambda: rows(lf_node, "SELECT count(*) FROM t") == [[0]], timeout=20)
        small_primary.stop()
        medium = [post(lf_node, ("INSERT INTO t (k, v) VALUES (?, ?)", [f"m{i}", "x" * 40_000])) for i in range(8)]
        big = post(lf_node, ("INSERT INTO t (k, v) VALUES ('big', ?)", ["y" * 300_000]))
        tail = [post(lf_node, ("INSERT INTO t (k) VALUES (?)", [f"tail{i}"])) for i in range(2)]
        assert all(r.status_code == 200 for r in (*medium, big, *tail))
        assert outbox(lf_node)["pending"] == 11
        small_primary.start()
        converge(small_primary, lf_node, timeout=60)
        assert primary_rows(small_primary, "SELECT k FROM t ORDER BY id") == [
            *((f"m{i}",) for i in range(8)),
            ("tail0",),
            ("tail1",),
        ]
        (conflict,) = conflicts(lf_node)
        assert conflict["write_id"] == big.json()["write_id"]
        assert conflict["error"]["code"] == "BODY_TOO_LARGE" and "max_body_bytes" in conflict["error"]["message"]
        assert conflict["attempts"] >= 1 and conflict["pushed_at"] is not None
        assert rows(lf_node, "SELECT count(*) FROM t WHERE k = 'big'") == [[0]]  # its local effects are gone
        assert "writes per push now" in lf_node.log()
    finally:
        lf_node.stop()
        small_primary.stop()


def test_a_backup_with_the_primary_down_lists_the_pending_writes_it_holds_and_restores_them(tmp_path: Path) -> None:
    own_primary = start_primary(tmp_path)
    primary_write(own_primary, SCHEMA[0])
    lf_node = start_node(tmp_path, own_primary, *LF, name="lf")
    try:
        wait_ready(lf_node)
        assert post(lf_node, ("INSERT INTO t (k) VALUES ('pushed')", [])).status_code == 200
        converge(own_primary, lf_node)
        own_primary.stop()
        ids = [post(lf_node, ("INSERT INTO t (k) VALUES (?)", [f"p{i}"])).json()["write_id"] for i in range(3)]
        response = httpx.post(f"{lf_node.url}/api/v1/backup", json={"name": "lf.db"}, headers=AUTH, timeout=30)
        assert response.status_code == 200, response.text
        report = response.json()
        assert report["kind"] == "replica" and report["local_writes"] == ids
        assert "3 acknowledged local writes" in report["note"]
        # A copy from another process cannot hold the node's pulls: refused, pointing at the HTTP route.
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgenode",
                "backup",
                "--data-dir",
                str(tmp_path / "lf"),
                "--to",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode != 0 and "POST /api/v1/backup" in cli.stdout + cli.stderr
        assert not (tmp_path / "x.db").exists()
        restored = tmp_path / "restored"
        done = subprocess.run(
            [sys.executable, "-m", "edgenode", "restore", "--from", report["path"], "--data-dir", str(restored)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        with sqlite3.connect(restored / "edgenode.db") as db:
            assert [k for (k,) in db.execute("SELECT k FROM t ORDER BY id")] == ["pushed", "p0", "p1", "p2"]
    finally:
        lf_node.stop()
        own_primary.stop()
