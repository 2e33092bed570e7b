"""A replica node speaks Hrana: the real libSQL clients against `edgenode serve --primary-url` over a
real `edgenode primary`. Reads are local, writes and transactions land on the primary, and what a
client wrote is readable on the node as soon as the write returns."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from edgenode.hrana.backend import HranaError
from edgenode.hrana.client import HranaClient
from tests.procs import Proc
from tests.test_node_hrana_support import (
    JS_EXPECTED_VALUES,
    check_js_client,
    exercise_libsql_client_v1,
    exercise_libsql_remote,
    needs_node,
    run_js_client,
)
from tests.test_replica_support import (
    NODE_TOKEN,
    PRIMARY_AUTH,
    module_primary_and_node,
    primary_rows,
    start_node,
    start_primary,
    wait_ready,
)

RO = "replica-read-token"


shared, primary, node = module_primary_and_node("hrana-replica", node_args=("--read-token", RO))


@needs_node
def test_npm_libsql_client_through_a_replica_node_writes_on_the_primary(
    node: Proc, primary: Proc, tmp_path: Path
) -> None:
    check_js_client(run_js_client(node.url, NODE_TOKEN, RO, "js_replica", tmp_path))
    on_primary = primary_rows(primary, "SELECT CAST(a AS TEXT) FROM js_replica ORDER BY a")
    assert [row[0] for row in on_primary] == JS_EXPECTED_VALUES


def test_libsql_remote_mode_through_a_replica_node(node: Proc, primary: Proc) -> None:
    exercise_libsql_remote(node.url, NODE_TOKEN, "py_remote")
    assert primary_rows(primary, "SELECT a FROM py_remote") == [("x",)]


def test_libsql_client_v1_through_a_replica_node(node: Proc, primary: Proc) -> None:
    exercise_libsql_client_v1(node.url, NODE_TOKEN, "py_v1")
    assert primary_rows(primary, "SELECT count(*) FROM py_v1") == [(2,)]


def primary_hrana_requests(primary: Proc) -> float:
    text = httpx.get(primary.url + "/metrics", headers=PRIMARY_AUTH, timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("edgenode_primary_hrana_requests_total{")
    )


def test_reads_are_local_and_writes_are_readable_at_once(node: Proc, primary: Proc) -> None:
    before = primary_hrana_requests(primary)
    with HranaClient(node.url, NODE_TOKEN, timeout=30) as client:
        client.execute("CREATE TABLE ryw(k INTEGER PRIMARY KEY, v TEXT)")
        for k in range(5):
            inserted = client.execute("INSERT INTO ryw(k, v) VALUES (?, ?)", [k, f"v{k}"])
            assert inserted.affected_row_count == 1 and inserted.last_insert_rowid == k
            # The very next read runs on this node's replica, which already has the write.
            assert client.execute("SELECT v FROM ryw WHERE k = ?", [k]).rows == [[f"v{k}"]]
    # One primary request per write (execute + close together); none for the reads.
    assert primary_hrana_requests(primary) - before == 6


def test_a_transaction_is_pinned_to_one_primary_stream(node: Proc, primary: Proc) -> None:
    with HranaClient(node.url, NODE_TOKEN, timeout=30) as client:
        client.execute("CREATE TABLE pinned(a INTEGER)")
        with client.stream() as stream:
            stream.execute("BEGIN")
            stream.execute("CREATE TABLE pinned_new(a INTEGER)")
            stream.execute("INSERT INTO pinned_new VALUES (1)")
            stream.execute("INSERT INTO pinned VALUES (1)")
            # Inside the transaction, reads see its own writes (they run on the primary stream).
            assert stream.execute("SELECT count(*) FROM pinned_new").rows == [[1]]
            assert stream.describe("SELECT a FROM pinned_new").cols[0].name == "a"
            assert not stream.is_autocommit()
            assert primary_rows(primary, "SELECT count(*) FROM pinned") == [(0,)]
            stream.execute("COMMIT")
            assert stream.is_autocommit()
            # Committed: on the primary, and on this node before COMMIT returned.
            assert stream.execute("SELECT count(*) FROM pinned_new").rows == [[1]]
        assert primary_rows(primary, "SELECT count(*) FROM pinned") == [(1,)]
        with client.stream() as stream:
            stream.execute("BEGIN")
            stream.execute("INSERT INTO pinned VALUES (2)")
            stream.execute("ROLLBACK")
        with client.stream() as stream:
            stream.execute("BEGIN")
            stream.execute("INSERT INTO pinned VALUES (3)")
            # Closing the stream mid-transaction rolls it back on the primary.
        assert primary_rows(primary, "SELECT a FROM pinned") == [(1,)]


def test_a_read_token_cannot_write_through_a_replica_node(node: Proc) -> None:
    with HranaClient(node.url, NODE_TOKEN, timeout=30) as client:
        client.execute("CREATE TABLE ro_rep(a INTEGER)")
    with HranaClient(node.url, RO, timeout=30) as client:
        assert client.execute("SELECT count(*) FROM ro_rep").rows == [[0]]
        with pytest.raises(HranaError) as exc:
            client.execute("INSERT INTO ro_rep VALUES (1)")
        assert exc.value.code == "SQLITE_READONLY"
        with client.stream() as stream:
            stream.execute("BEGIN")
            with pytest.raises(HranaError) as exc:
                stream.execute("DELETE FROM ro_rep")
            assert exc.value.code == "SQLITE_READONLY"
            stream.execute("ROLLBACK")
    response = httpx.post(node.url + "/v2/pipeline", json={"baton": None, "requests": []})
    assert response.status_code == 401


def test_with_the_primary_down_writes_fail_fast_with_a_clear_error_and_reads_go_on(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    node = start_node(tmp_path, primary)
    try:
        wait_ready(node)
        with HranaClient(node.url, NODE_TOKEN, timeout=30) as client:
            client.execute("CREATE TABLE down(a INTEGER)")
            client.execute("INSERT INTO down VALUES (1)")
            open_txn = client.stream()
            open_txn.execute("BEGIN")
            open_txn.execute("INSERT INTO down VALUES (3)")
            primary.kill()
            started = time.monotonic()
            with pytest.raises(HranaError) as exc:
                client.execute("INSERT INTO down VALUES (2)")
            assert time.monotonic() - started < 2.0
            assert exc.value.code == "PRIMARY_UNAVAILABLE"
            assert primary.url.removeprefix("http://") in exc.value.message
            # A transaction pinned to the dead primary fails fast too, and the node's stream goes on.
            started = time.monotonic()
            with pytest.raises(HranaError) as exc:
                open_txn.execute("COMMIT")
            assert time.monotonic() - started < 2.0
            assert exc.value.code == "PRIMARY_UNAVAILABLE"
            assert open_txn.is_autocommit()
            open_txn.close()
            with pytest.raises(HranaError) as exc, client.stream() as stream:
                stream.execute("BEGIN")
            assert exc.value.code == "PRIMARY_UNAVAILABLE"
            assert client.execute("SELECT a FROM down").rows == [[1]]
    finally:
        node.stop()
        primary.stop()


def test_rest_and_hrana_writes_go_through_one_forwarder(node: Proc) -> None:
    """The replica's REST and Hrana writes share one path to the primary: one set of counters, and
    both answer only once the write is visible on this node."""
    auth = {"authorization": f"Bearer {NODE_TOKEN}"}

    def sent() -> int:
        status = httpx.get(node.url + "/api/v1/status", headers=auth, timeout=10).json()
        return int(status["database"]["writes"]["sent"])

    before = sent()
    with HranaClient(node.url, NODE_TOKEN, timeout=30) as client:
        client.execute("CREATE TABLE one_path(a INTEGER)")
        client.execute("INSERT INTO one_path VALUES (1)")
    written = httpx.post(
        node.url + "/api/v1/execute",
        headers=auth,
        json={"statements": [{"sql": "INSERT INTO one_path VALUES (2)"}]},
        timeout=30,
    ).json()
    assert written["generation"] is not None and written["frame"] is not None
    assert sent() - before == 3
    rows = httpx.post(
        node.url + "/api/v1/query", headers=auth, json={"sql": "SELECT a FROM one_path ORDER BY a"}, timeout=10
    ).json()["rows"]
    assert rows == [[1], [2]]
