"""Replica nodes against a real `edgenode primary`: reads local, writes routed, read-your-writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.procs import ROOT, Proc
from tests.test_replica_support import (
    AUTH,
    TOKEN,
    eventually,
    execute,
    module_primary_and_node,
    primary_rows,
    primary_write,
    query,
    rows,
    start_node,
    status,
    wait_ready,
)

# One primary and one node for the module (each test uses its own keys): process startup dominates.
shared, primary, node = module_primary_and_node(
    "replica-node", "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT, b BLOB)"
)


def test_a_write_is_readable_on_its_node_at_once_and_on_another_node_after_its_next_sync(
    tmp_path: Path, primary: Proc, node: Proc
) -> None:
    other = start_node(tmp_path, primary, "--sync-interval", "1", name="other")
    try:
        wait_ready(other)
        response = execute(node, ("INSERT INTO kv(k, v) VALUES (?, ?)", [1, "one"]))
        assert response.status_code == 200, response.text
        written = response.json()
        assert written["results"] == [{"rows_affected": 1, "last_insert_rowid": 1}]
        assert written["generation"] == 1 and written["frame"] >= 1
        # Read-your-writes: no freshness bound needed on the node that wrote.
        assert rows(node, "SELECT v FROM kv WHERE k = 1") == [["one"]]
        # The other node: with the frame as a bound it waits for it; without, it shows up soon.
        bound = {"min_generation": written["generation"], "min_frame": written["frame"]}
        assert rows(other, "SELECT v FROM kv WHERE k = 1", **bound) == [["one"]]
        execute(node, ("INSERT INTO kv(k, v) VALUES (?, ?)", [2, "two"]))
        eventually(lambda: rows(other, "SELECT v FROM kv WHERE k = 2") == [["two"]], timeout=5)
    finally:
        other.stop()


def test_writes_on_the_primary_reach_the_node(primary: Proc, node: Proc) -> None:
    primary_write(primary, "INSERT INTO kv(k, v) VALUES (10, 'from the primary')")
    eventually(lambda: rows(node, "SELECT v FROM kv WHERE k = 10") == [["from the primary"]], timeout=5)


def test_a_transaction_is_atomic_and_a_failing_statement_is_named(primary: Proc, node: Proc) -> None:
    response = execute(
        node,
        ("INSERT INTO kv(k, v) VALUES (?, ?)", [20, "first"]),
        ("INSERT INTO kv(k, v) VALUES (?, ?)", [20, "duplicate key"]),
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "sql_error" and "statements[1]" in error["message"]
    assert rows(node, "SELECT count(*) FROM kv WHERE k = 20") == [[0]]
    assert primary_rows(primary, "SELECT count(*) FROM kv WHERE k = 20") == [(0,)]


def test_64_bit_integers_and_blobs_written_through_the_node_stay_exact(primary: Proc, node: Proc) -> None:
    big = 9007199254740993
    response = execute(node, ("INSERT INTO kv(k, v, b) VALUES (?, ?, ?)", [big, "big", {"base64": "AAEC/w=="}]))
    assert response.status_code == 200, response.text
    assert rows(node, "SELECT k, typeof(k), b FROM kv WHERE v = 'big'") == [[big, "integer", {"base64": "AAEC/w=="}]]
    assert primary_rows(primary, "SELECT k FROM kv WHERE v = 'big'") == [(big,)]


def test_schema_changes_through_the_node_are_usable_right_away(node: Proc) -> None:
    response = execute(
        node, "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT)", ("INSERT INTO notes(body) VALUES (?)", ["hi"])
    )
    assert response.status_code == 200, response.text
    assert rows(node, "SELECT body FROM notes") == [["hi"]]


def test_the_query_endpoint_refuses_writes(node: Proc) -> None:
    response = query(node, "INSERT INTO kv(k, v) VALUES (99, 'nope')")
    assert response.status_code == 403
    assert rows(node, "SELECT count(*) FROM kv WHERE k = 99") == [[0]]


def test_status_ready_metrics_and_sync_endpoint_describe_the_replica(primary: Proc, node: Proc) -> None:
    database = status(node)
    assert database["role"] == "replica"
    assert database["state"] == "synced"
    assert database["generation"] == 1 and isinstance(database["frame"], int)
    assert database["last_sync"] and database["last_error"] is None
    assert 0 <= database["lag_seconds"] < 2
    assert database["primary_url"] == primary.url
    assert database["bootstrap"]["bytes_total"] > 0 and database["bootstrap"]["phase"] == "done"
    assert "busy_timeout_5000" in database["pragmas"]["applied"]
    assert "foreign_keys_on" in database["pragmas"]["refused"]
    response = httpx.get(node.url + "/api/v1/status", headers=AUTH).json()
    assert response["role"] == "replica" and response["components"]["sync"]["state"] == "synced"
    primary_write(primary, "INSERT INTO kv(k, v) VALUES (30, 'x')")
    synced = httpx.post(node.url + "/api/v1/sync", headers=AUTH, timeout=10)
    assert synced.status_code == 200, synced.text
    assert synced.json()["frame"] >= database["frame"]
    assert rows(node, "SELECT v FROM kv WHERE k = 30") == [["x"]]
    metrics = httpx.get(node.url + "/metrics", headers=AUTH).text
    for name in (
        "edgenode_replica_syncs_total",
        "edgenode_replica_sync_errors_total",
        "edgenode_replica_sync_duration_seconds_bucket",
        "edgenode_replica_frames_applied_total",
        "edgenode_replica_generation 1.0",
        "edgenode_replica_lag_seconds",
    ):
        assert name in metrics
    assert httpx.get(node.url + "/ready").status_code == 200


def test_migrate_on_a_replica_node_runs_on_the_primary(shared: Path, primary: Proc, node: Proc) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "edgenode", "migrate", "--data-dir", str(shared / "node")),
            *("--primary-url", primary.url, "--primary-token", TOKEN),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "applied" in result.stdout
    applied = primary_rows(primary, "SELECT count(*) FROM _edgenode_migrations")[0][0]
    assert applied >= 1
    eventually(lambda: rows(node, "SELECT count(*) FROM _edgenode_migrations") == [[applied]], timeout=5)
    again = subprocess.run(
        [sys.executable, "-m", "edgenode", "migrate", "--primary-url", primary.url, "--primary-token", TOKEN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 0 and "nothing to apply" in again.stdout
