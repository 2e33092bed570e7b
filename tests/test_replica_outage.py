"""A primary that goes away: nodes keep reading, report staleness, fail writes fast, then recover."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from tests.test_replica_support import (
    AUTH,
    eventually,
    execute,
    primary_write,
    rows,
    start_node,
    start_primary,
    status,
    wait_ready,
)


def test_nodes_survive_a_primary_outage_and_recover_without_restart(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv VALUES (1, 'before')")
    nodes = [start_node(tmp_path, primary, name=f"node{i}") for i in range(2)]
    try:
        for node in nodes:
            wait_ready(node)
        port = primary.port
        primary.kill()
        killed_at = time.monotonic()

        for node in nodes:
            # Reads go on from the local replica.
            assert rows(node, "SELECT v FROM kv") == [["before"]]
            # A write fails fast and says why.
            began = time.monotonic()
            response = execute(node, "INSERT INTO kv VALUES (2, 'during')")
            assert response.status_code == 503, response.text
            assert time.monotonic() - began < 3
            assert "unreachable" in response.json()["error"]["message"]

        # Readiness turns 503 once the lag passes max_lag (2 s in these tests), not before it.
        for node in nodes:
            response = eventually(lambda n=node: _not_ready(n), timeout=6)
            assert "lag" in response["reason"] or "error" in response["reason"]
        assert time.monotonic() - killed_at >= 1.5
        database = status(nodes[0])
        assert database["state"] == "error" and database["last_error"]
        assert database["sync_errors"] >= 1
        assert rows(nodes[0], "SELECT v FROM kv") == [["before"]]
        # Freshness-bounded reads cannot be met and say so quickly.
        stale = httpx.post(
            nodes[0].url + "/api/v1/query", json={"sql": "SELECT 1", "max_staleness_ms": 100}, headers=AUTH, timeout=10
        )
        assert stale.status_code == 503

        # The primary comes back on the same address; the nodes pick it up on their own.
        primary = start_primary(tmp_path, port=port)
        primary_write(primary, "INSERT INTO kv VALUES (3, 'after')")
        for node in nodes:
            wait_ready(node, timeout=20)
            eventually(lambda n=node: rows(n, "SELECT v FROM kv ORDER BY k") == [["before"], ["after"]], timeout=10)
            assert status(node)["state"] == "synced"
        response = execute(nodes[1], "INSERT INTO kv VALUES (4, 'written after recovery')")
        assert response.status_code == 200, response.text
        assert rows(nodes[1], "SELECT v FROM kv WHERE k = 4") == [["written after recovery"]]
    finally:
        for node in nodes:
            node.stop()
        primary.stop()


def test_a_primary_that_hangs_cannot_freeze_the_node(tmp_path: Path) -> None:
    """SIGSTOP: connections are accepted but never answered. The relay's deadline bounds each sync,
    so the node's event loop stays free: reads and health answer, writes fail within seconds."""
    primary = start_primary(tmp_path)
    primary_write(primary, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv VALUES (1, 'x')")
    node = start_node(tmp_path, primary, "--sync-timeout", "1")
    try:
        wait_ready(node)
        assert primary.popen is not None
        primary.popen.send_signal(signal.SIGSTOP)
        try:
            time.sleep(1.5)  # let several syncs hit the hung primary
            for _ in range(10):
                began = time.monotonic()
                assert rows(node, "SELECT v FROM kv") == [["x"]]
                assert httpx.get(node.url + "/health", timeout=5).status_code == 200
                assert time.monotonic() - began < 1.5
                time.sleep(0.1)
            began = time.monotonic()
            response = execute(node, "INSERT INTO kv VALUES (2, 'y')")
            assert response.status_code == 503
            assert time.monotonic() - began < 6
            eventually(lambda: status(node)["state"] == "error", timeout=5)
        finally:
            primary.popen.send_signal(signal.SIGCONT)
        wait_ready(node, timeout=20)
    finally:
        node.stop()
        primary.stop()


def _not_ready(node: object) -> dict[str, str] | bool:
    response = httpx.get(node.url + "/ready", timeout=2)  # type: ignore[attr-defined]
    return response.json() if response.status_code == 503 else False


def test_a_new_node_whose_primary_is_down_waits_for_it_instead_of_exiting(tmp_path: Path) -> None:
    from tests.procs import free_port

    port = free_port()  # nothing listens here yet
    node = start_node(tmp_path, f"http://127.0.0.1:{port}")
    primary = None
    try:
        time.sleep(1.0)
        assert node.popen is not None and node.popen.poll() is None, node.log()[-2000:]
        assert httpx.get(node.url + "/health", timeout=2).status_code == 200
        not_ready = httpx.get(node.url + "/ready", timeout=2)
        assert not_ready.status_code == 503 and not_ready.json()["reason"]
        primary = start_primary(tmp_path, port=port)
        primary_write(primary, "CREATE TABLE kv(k INTEGER PRIMARY KEY, v TEXT)", "INSERT INTO kv VALUES (1, 'late')")
        wait_ready(node, timeout=30)
        assert eventually(lambda: rows(node, "SELECT v FROM kv") == [["late"]] or False, timeout=15)
        assert httpx.get(node.url + "/api/v1/collections", headers=AUTH, timeout=5).status_code == 200
    finally:
        node.stop()
        if primary is not None:
            primary.stop()
