"""A standalone node has one pool of reader processes, `read_connections` of them, shared by REST
reads, Hrana autocommit reads and Hrana read transactions; read transactions never take the last one."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.installed import descendants
from tests.procs import start

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the process tree from /proc")


def connection_processes(node_pid: int) -> list[int]:
    """The node's libSQL connection owners, oldest first (the writer, which starts before the
    readers): the children of its fork server (Linux /proc)."""
    for pid in descendants(node_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent == node_pid and b"forkserver" in cmdline:
            return sorted(descendants(pid))
    raise AssertionError("no fork server below the node")


def _execute(sql: str) -> dict[str, Any]:
    return {"type": "execute", "stmt": {"sql": sql}}


def test_rest_and_hrana_reads_share_read_connections_readers_and_transactions_leave_one(tmp_path: Path) -> None:
    node = start(
        ["serve", "--data-dir", str(tmp_path / "data"), "--read-connections", "2"],
        tmp_path,
        "shared",
        ready_path="/ready",
    )
    assert node.popen is not None
    try:
        with httpx.Client(base_url=node.url, timeout=30) as http:

            def pipeline(*requests: dict[str, Any], baton: str | None = None) -> dict[str, Any]:
                response = http.post("/v3/pipeline", json={"baton": baton, "requests": list(requests)})
                assert response.status_code == 200, response.text
                body = response.json()
                assert all(r["type"] == "ok" for r in body["results"]), body
                return body

            def rest_read() -> Any:
                response = http.post("/api/v1/query", json={"sql": "SELECT count(*) FROM t"})
                assert response.status_code == 200, response.text
                return response.json()["rows"]

            # The writer and two readers: no second set of readers for Hrana.
            assert len(connection_processes(node.popen.pid)) == 3
            assert http.get("/api/v1/status").json()["database"]["readers"] == 2

            response = http.post(
                "/api/v1/execute",
                json={"statements": [{"sql": "CREATE TABLE t (a)"}, {"sql": "INSERT INTO t VALUES (1)"}]},
            )
            assert response.status_code == 200, response.text
            # A read transaction leases one reader for its length.
            held = pipeline(_execute("BEGIN TRANSACTION READONLY"), _execute("SELECT a FROM t"))["baton"]
            # A second one waits: leases never take the last reader.
            second: dict[str, Any] = {}
            waiter = threading.Thread(target=lambda: second.update(pipeline(_execute("BEGIN TRANSACTION READONLY"))))
            waiter.start()
            waiter.join(0.5)
            assert waiter.is_alive()
            # REST and Hrana autocommit reads, concurrently, all answered by the reader left.
            started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                rest = [pool.submit(rest_read) for _ in range(20)]
                hrana = [
                    pool.submit(pipeline, _execute("SELECT count(*) FROM t"), {"type": "close"}) for _ in range(20)
                ]
                assert all(f.result() == [[1]] for f in rest)
                counts = [f.result()["results"][0]["response"]["result"]["rows"] for f in hrana]
                assert counts == [[[{"type": "integer", "value": "1"}]]] * 20
            assert time.monotonic() - started < 10
            assert waiter.is_alive()
            # The first transaction ends: its reader goes to the waiting one.
            pipeline(_execute("COMMIT"), {"type": "close"}, baton=held)
            waiter.join(30)
            assert not waiter.is_alive() and second["baton"]
            pipeline(_execute("COMMIT"), {"type": "close"}, baton=second["baton"])
            assert rest_read() == [[1]]
            # kill -9 both readers: REST and Hrana reads fail at worst (503 / SQLITE_IOERR) until
            # the pool has replaced them, whichever side found them dead.
            for pid in connection_processes(node.popen.pid)[1:]:
                os.kill(pid, signal.SIGKILL)
            with ThreadPoolExecutor(8) as pool:
                rest_codes = [pool.submit(http.post, "/api/v1/query", json={"sql": "SELECT 1"}) for _ in range(8)]
                hrana_codes = [
                    pool.submit(http.post, "/v3/pipeline", json={"requests": [_execute("SELECT 1")]}) for _ in range(8)
                ]
                assert {f.result().status_code for f in rest_codes} <= {200, 503}
                assert all(f.result().status_code == 200 for f in hrana_codes)
            deadline = time.monotonic() + 30
            while http.get("/api/v1/status").json()["database"]["readers_replaced"] < 2:
                http.post("/api/v1/query", json={"sql": "SELECT 1"})
                assert time.monotonic() < deadline, "the dead readers were not replaced"
                time.sleep(0.05)
            assert rest_read() == [[1]]
            assert pipeline(_execute("SELECT count(*) FROM t"), {"type": "close"})["results"][0]["type"] == "ok"
            assert len(connection_processes(node.popen.pid)) == 3
    finally:
        node.stop()
