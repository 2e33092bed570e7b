"""Replicas that cannot follow as they are: another primary, broken local state, a generation the
primary no longer serves. Each is detected, logged, counted and fixed by bootstrapping again.
Also: generation rollovers under write load."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import apsw
import httpx

from tests.test_replica_support import (
    AUTH,
    PRIMARY_AUTH,
    eventually,
    execute,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    status,
    wait_ready,
)


def test_a_replica_pointed_at_a_different_primary_is_detected_and_rebuilt(tmp_path: Path) -> None:
    first = start_primary(tmp_path, name="first")
    second = start_primary(tmp_path, name="second")
    try:
        primary_write(first, "CREATE TABLE only_on_first(x)", "INSERT INTO only_on_first VALUES (1)")
        primary_write(second, "CREATE TABLE only_on_second(y)", "INSERT INTO only_on_second VALUES (2)")
        node = start_node(tmp_path, first)
        wait_ready(node)
        assert rows(node, "SELECT x FROM only_on_first") == [[1]]
        node.stop()

        node = start_node(tmp_path, second)
        try:
            wait_ready(node)
            assert rows(node, "SELECT y FROM only_on_second") == [[2]]
            assert query_fails(node, "SELECT x FROM only_on_first")
            database = status(node)
            assert database["resyncs"] == {"primary_changed": 1}
            assert second.url in database["last_resync"]["message"]
            assert "replica will be rebuilt" in node.log()
        finally:
            node.stop()
    finally:
        first.stop()
        second.stop()


def test_a_primary_recreated_at_the_same_url_is_detected_before_its_frames_are_applied(tmp_path: Path) -> None:
    first = start_primary(tmp_path, name="first")
    port = first.port
    node = start_node(tmp_path, first)
    try:
        primary_write(first, "CREATE TABLE old_t(x)", *[("INSERT INTO old_t VALUES (?)", [i]) for i in range(3)])
        eventually(lambda: rows(node, "SELECT count(*) FROM old_t") == [[3]], timeout=10)
        first.stop()
        # Same URL, another database, with more frames than the replica has: frame numbers alone
        # would let the replica apply the new primary's frames onto the old database's pages.
        second = start_primary(tmp_path, name="second", port=port)
        try:
            primary_write(second, "CREATE TABLE new_t(y)", *[("INSERT INTO new_t VALUES (?)", [i]) for i in range(30)])

            def new_rows() -> object:
                response = httpx.post(
                    node.url + "/api/v1/query", json={"sql": "SELECT count(*) FROM new_t"}, headers=AUTH
                )
                return response.json().get("rows") if response.status_code == 200 else response.status_code

            eventually(lambda: new_rows() == [[30]], timeout=20)
            assert query_fails(node, "SELECT x FROM old_t")
            database = status(node)
            assert database["resyncs"] == {"primary_changed": 1}
            assert "primary database changed" in database["last_resync"]["message"]
            check = apsw.Connection(str(tmp_path / "node" / "replica" / "replica.db"), flags=apsw.SQLITE_OPEN_READONLY)
            assert check.execute("PRAGMA quick_check").fetchall() == [("ok",)]
            check.close()
        finally:
            second.stop()
    finally:
        node.stop()
        first.stop()


def test_invalid_local_state_is_rebuilt_on_start(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    try:
        primary_write(primary, "CREATE TABLE t(x)", "INSERT INTO t VALUES ('kept on the primary')")
        node = start_node(tmp_path, primary)
        wait_ready(node)
        node.stop()
        (tmp_path / "node" / "replica" / "replica.db-info").write_text('{"hash": 1, "version": 0}')
        node = start_node(tmp_path, primary)
        try:
            wait_ready(node)
            assert rows(node, "SELECT x FROM t") == [["kept on the primary"]]
            assert status(node)["resyncs"] == {"invalid_local_state": 1}
        finally:
            node.stop()
    finally:
        primary.stop()


def test_a_generation_the_primary_no_longer_serves_makes_the_node_bootstrap_again(tmp_path: Path) -> None:
    primary = start_primary(tmp_path, "--keep-generations", "0")
    try:
        primary_write(primary, "CREATE TABLE t(x)", "INSERT INTO t VALUES (1)")
        node = start_node(tmp_path, primary)
        wait_ready(node)
        node.stop()
        for value in (2, 3):
            primary_write(primary, ("INSERT INTO t VALUES (?)", [value]))
            httpx.post(primary.url + "/rollover", headers=PRIMARY_AUTH, timeout=10).raise_for_status()
        node = start_node(tmp_path, primary)
        try:
            wait_ready(node)
            assert rows(node, "SELECT x FROM t ORDER BY x") == [[1], [2], [3]]
            database = status(node)
            assert database["resyncs"] == {"generation_gone": 1}
            assert database["generation"] == 3
        finally:
            node.stop()
    finally:
        primary.stop()


def test_nodes_follow_generation_rollovers_under_write_load(tmp_path: Path) -> None:
    primary = start_primary(tmp_path, "--generation-max-frames", "100")
    primary_write(primary, "CREATE TABLE t(id INTEGER PRIMARY KEY, via TEXT, data BLOB)")
    node = start_node(tmp_path, primary)
    stop = threading.Event()
    failures: list[str] = []

    def load_on_primary() -> None:
        # About 50 transactions a second: a new generation every half second or so.
        while not stop.wait(0.02):
            primary_write(primary, *[("INSERT INTO t(via, data) VALUES ('primary', randomblob(3000))", [])] * 2)

    try:
        wait_ready(node)
        thread = threading.Thread(target=load_on_primary, daemon=True)
        thread.start()
        for i in range(40):
            response = execute(node, ("INSERT INTO t(via, data) VALUES (?, randomblob(2000))", [f"node-{i}"]))
            if response.status_code != 200:
                failures.append(response.text)
                continue
            # Read-your-writes holds across rollovers.
            assert rows(node, "SELECT count(*) FROM t WHERE via = ?", [f"node-{i}"]) == [[1]]
        stop.set()
        thread.join(10)
        assert not failures, failures[:3]
        info = httpx.get(primary.url + "/info", headers=PRIMARY_AUTH).json()
        assert info["current_generation"] >= 4
        expected = primary_rows(primary, "SELECT count(*), sum(length(data)) FROM t")[0]
        eventually(lambda: tuple(rows(node, "SELECT count(*), sum(length(data)) FROM t")[0]) == expected, timeout=10)
        assert status(node)["generation"] == info["current_generation"]
        assert status(node)["resyncs"] == {}
    finally:
        stop.set()
        node.stop()
        primary.stop()
    conn = apsw.Connection(str(tmp_path / "node" / "replica" / "replica.db"), flags=apsw.SQLITE_OPEN_READONLY)
    assert [r[0] for r in conn.execute("PRAGMA quick_check")] == ["ok"]
    conn.close()


def query_fails(node: object, sql: str) -> bool:
    response = httpx.post(node.url + "/api/v1/query", json={"sql": sql}, headers=AUTH)  # type: ignore[attr-defined]
    return response.status_code == 400


def test_reads_stay_fast_while_a_restarted_node_catches_up_on_many_commits(tmp_path: Path) -> None:
    """The client applies each commit with two fsyncs while holding the GIL; the replica's connection
    lives in its own process and the relay cuts the catch-up into slices, so reads keep flowing."""
    primary = start_primary(tmp_path)
    try:
        primary_write(primary, "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        node = start_node(tmp_path, primary)
        wait_ready(node)
        node.stop()
        commits = 600
        for i in range(commits):
            primary_write(primary, ("INSERT INTO t(v) VALUES (?)", [f"row {i}"]))
        node = start_node(tmp_path, primary, "--max-lag", "30")
        try:
            slowest, during, began_catch_up = 0.0, 0, time.monotonic()
            while True:
                began = time.monotonic()
                count = rows(node, "SELECT count(*) FROM t")[0][0]
                slowest = max(slowest, time.monotonic() - began)
                if count == commits:
                    break
                during += 1
            catch_up = time.monotonic() - began_catch_up
            assert during >= 3, "the reads were meant to run while the node caught up"
            # Reads wait for at most a slice, never for the whole catch-up (loaded CI machines: generous).
            assert slowest < min(1.0, catch_up / 2), f"a read waited {slowest:.3f} s of a {catch_up:.1f} s catch-up"
            database = status(node)
            assert database["state"] == "synced" and database["resyncs"] == {}
        finally:
            node.stop()
    finally:
        primary.stop()
