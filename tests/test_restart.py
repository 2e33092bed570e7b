"""A replica node killed with SIGKILL comes back ready quickly and logs where its start-up time went."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.test_replica_support import AUTH, execute, primary_write, start_node, start_primary, wait_ready

TIMELINE = re.compile(
    r"edgenode\.startup: ready ([0-9.]+) s after process start \(([0-9.]+) s of CPU in this process\): (.*)"
)


def test_a_replica_node_killed_with_9_is_ready_again_quickly_and_logs_its_start_up_timeline(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    node = start_node(tmp_path, primary)
    try:
        wait_ready(node)
        for _ in range(10):
            assert execute(node, "INSERT INTO t (v) VALUES (randomblob(2000))").status_code == 200
        node.kill()
        spawned = time.monotonic()
        node.start(ready_path="/health")
        wait_ready(node, timeout=30)
        # Loose on purpose (a shared, loaded machine): the measured figure is bench/cold_start.py's.
        assert time.monotonic() - spawned < 15
        timelines = TIMELINE.findall(node.log())
        assert len(timelines) == 2, "one timeline per start"
        marks = dict(item.rsplit(" ", 1) for item in timelines[-1][2].split(", "))
        for phase in ("imports", "app_built", "replica_connection_open", "replica_first_sync", "ready"):
            assert phase in marks, f"{phase} missing from {marks}"
        assert float(marks["imports"]) <= float(marks["replica_connection_open"]) <= float(marks["ready"])
        count = httpx.post(node.url + "/api/v1/query", json={"sql": "SELECT count(*) FROM t"}, headers=AUTH)
        assert count.json()["rows"] == [[10]]
    finally:
        node.stop()
        primary.stop()
