"""Local-first writes (`--write-mode local-first`) with a real primary and real nodes: answered at
once, pushed in the background exactly once, conflicts listed, nodes converge (docs/local-first.md)."""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from edgenode.hrana.client import HranaClient
from tests.local_first_support import LF, conflicts, converge, outbox
from tests.procs import Proc
from tests.test_replica_support import (
    AUTH,
    NODE_TOKEN,
    eventually,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)

SCHEMA = (
    "CREATE TABLE log (id INTEGER PRIMARY KEY, marker TEXT NOT NULL, n INTEGER)",
    "CREATE TABLE uniq (v TEXT UNIQUE)",
)


def post(node: Proc, *statements: tuple[str, list[Any]], key: str | None = None) -> httpx.Response:
    body = {"statements": [{"sql": sql, "params": params} for sql, params in statements]}
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(node.url + "/api/v1/execute", json=body, headers=headers, timeout=10)


def test_a_write_is_answered_at_once_read_here_at_once_and_reaches_the_primary_exactly_once(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    try:
        wait_ready(node)
        big = 2**62 + 1
        first = post(node, ("INSERT INTO log (marker, n) VALUES (?, ?)", ["a", big]), key="client-1")
        assert first.status_code == 200, first.text
        body = first.json()
        assert body["pending"] is True and body["write_id"].endswith("-1")
        assert body["results"] == [{"rows_affected": 1, "last_insert_rowid": 1}]
        assert rows(node, "SELECT marker, n FROM log") == [["a", big]]  # no wait for the primary
        # The client's retry under its key is answered from the outbox: same write, applied once.
        again = post(node, ("INSERT INTO log (marker, n) VALUES (?, ?)", ["a", big]), key="client-1")
        assert again.json()["write_id"] == body["write_id"] and again.headers["Idempotent-Replayed"] == "true"
        assert post(node, ("INSERT INTO log (marker) VALUES ('b')", []), key="client-1").status_code == 422
        assert post(node, ("INSERT INTO nope VALUES (1)", [])).status_code == 400  # refused here, nothing queued
        eventually(lambda: primary_rows(primary, "SELECT marker, n FROM log") == [("a", big)])
        entry = eventually(
            lambda: (
                (e := httpx.get(f"{node.url}/api/v1/outbox/{body['write_id']}", headers=AUTH).json())["state"]
                == "applied"
                and e
            )
        )
        assert entry["primary_results"] == [[1, 1]] and entry["statements"][0]["params"] == ["a", big]
        state = outbox(node)
        assert state["pending"] == 0 and state["pushed"] == 1 and state["failed"] == 0
        status = httpx.get(node.url + "/api/v1/status", headers=AUTH).json()
        assert status["database"]["write_mode"] == "local-first"
        metrics = httpx.get(node.url + "/metrics", headers=AUTH).text
        assert 'edgenode_outbox_decisions_total{outcome="applied"} 1.0' in metrics
        # A libSQL client's autocommit write takes the same path: committed here, queued, pushed.
        with HranaClient(node.url, NODE_TOKEN, timeout=10) as client:
            written = client.execute("INSERT INTO log (marker, n) VALUES (?, ?)", ["hrana", -big])
            assert (written.affected_row_count, written.last_insert_rowid) == (1, 2)
            assert client.execute("SELECT n FROM log WHERE marker = 'hrana'").rows == [[-big]]
            # Blobs and named parameters too (queued in their JSON form, exact).
            blob = client.execute("INSERT INTO log (marker, n) VALUES (hex(?), length(?))", [b"\x00\xff", b"\x01"])
            assert blob.affected_row_count == 1
            client.execute("INSERT INTO log (marker, n) VALUES (hex(:b), :n)", {"b": b"\xfe", "n": 7})
        eventually(lambda: primary_rows(primary, "SELECT n FROM log WHERE marker = 'hrana'") == [(-big,)])
        eventually(lambda: primary_rows(primary, "SELECT marker, n FROM log WHERE id > 2") == [("00FF", 1), ("FE", 7)])
        eventually(lambda: outbox(node)["pushed"] == 4)
        unknown = httpx.get(node.url + "/api/v1/outbox/nobody-1", headers=AUTH)
        assert unknown.status_code == 404 and "write ids look like" in unknown.text
        converge(primary, node)
    finally:
        node.stop()
        primary.stop()


def test_an_outage_with_colliding_writes_on_two_nodes_applies_each_write_once_or_lists_it_and_converges(
    tmp_path: Path,
) -> None:
    """Issue #20 test 1 (short): the primary is down while two nodes take writes, some colliding on a
    unique key, and one node is killed -9 and restarted mid-outage; then the primary returns."""
    writes = int(os.environ.get("EDGENODE_LF_OUTAGE_WRITES", "40"))
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    nodes = [start_node(tmp_path, primary, *LF, name=f"node{i}") for i in range(2)]
    acknowledged: dict[str, tuple[int, str]] = {}  # marker -> (node index, write id)
    try:
        for node in nodes:
            wait_ready(node)
        primary.stop()
        for i in range(writes):
            for n, node in enumerate(nodes):
                marker = f"n{n}-{i}"
                statements: list[tuple[str, list[Any]]] = [("INSERT INTO log (marker) VALUES (?)", [marker])]
                if i % 10 == 0:  # both nodes claim the same unique value: one of the two must lose
                    statements.append(("INSERT INTO uniq (v) VALUES (?)", [f"c{i}"]))
                response = post(node, *statements)
                assert response.status_code == 200, response.text
                acknowledged[marker] = (n, response.json()["write_id"])
            if i == writes // 2:
                nodes[0].kill()
                nodes[0].start()  # recovery at open: rollback to the pulled state, replay the queue
        assert outbox(nodes[0])["pending"] == writes and outbox(nodes[1])["pending"] == writes
        # Reads on each node see its own pending writes.
        assert len(rows(nodes[0], "SELECT marker FROM log")) == writes
        primary.start()
        converge(primary, *nodes, timeout=90)
        on_primary: dict[str, int] = {}
        for (marker,) in primary_rows(primary, "SELECT marker FROM log"):
            on_primary[marker] = on_primary.get(marker, 0) + 1
        listed = {c["write_id"]: c for n in nodes for c in conflicts(n)}
        for marker, (_, write_id) in acknowledged.items():
            if write_id in listed:
                assert marker not in on_primary, marker
                assert "UNIQUE" in listed[write_id]["error"]["message"]
            else:
                assert on_primary.get(marker) == 1, (marker, on_primary.get(marker))
        assert len(listed) == len(range(0, writes, 10))  # exactly one loser per collision
        assert set(on_primary) <= set(acknowledged)
    finally:
        for node in nodes:
            node.stop()
        primary.stop()


def test_a_conflict_can_be_retried_as_a_new_write_or_discarded(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    try:
        wait_ready(node)
        primary.stop()
        assert post(node, ("INSERT INTO uniq (v) VALUES ('x')", [])).status_code == 200
        assert post(node, ("INSERT INTO uniq (v) VALUES ('y')", [])).status_code == 200
        # The primary takes the same values while the node is down: a node that is up pushes as
        # soon as the primary is back, and could win the race the test means it to lose.
        node.stop()
        primary.start()
        primary_write(primary, "INSERT INTO uniq (v) VALUES ('x')", "INSERT INTO uniq (v) VALUES ('y')")
        node.start()
        wait_ready(node)
        listed = eventually(lambda: len(conflicts(node)) == 2 and conflicts(node), timeout=30)
        x, y = (c["write_id"] for c in listed)
        primary_write(primary, "DELETE FROM uniq WHERE v = 'x'")
        eventually(lambda: rows(node, "SELECT count(*) FROM uniq") == [[1]], timeout=30)
        retried = httpx.post(f"{node.url}/api/v1/conflicts/{x}/retry", headers=AUTH)
        assert retried.status_code == 200, retried.text
        assert retried.json()["write_id"] != x and retried.json()["pending"] is True
        assert httpx.delete(f"{node.url}/api/v1/conflicts/{y}", headers=AUTH).json() == {"discarded": y}
        assert httpx.delete(f"{node.url}/api/v1/conflicts/{y}", headers=AUTH).status_code == 404
        converge(primary, node)
        assert primary_rows(primary, "SELECT v FROM uniq ORDER BY v") == [("x",), ("y",)]
        assert conflicts(node) == []
    finally:
        node.stop()
        primary.stop()


def test_queued_writes_for_a_primary_database_that_was_replaced_halt_the_pushes(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    try:
        wait_ready(node)
        primary.stop()
        assert post(node, ("INSERT INTO log (marker) VALUES ('for-the-old-one')", [])).status_code == 200
        shutil.rmtree(tmp_path / "primary")  # a new database at the same URL
        primary.start()
        primary_write(primary, *SCHEMA)
        state = eventually(lambda: "halted" in (outbox(node)["paused"] or "") and outbox(node), timeout=30)
        assert state["pending"] == 1 and "belong to database" in state["paused"]
        assert primary_rows(primary, "SELECT count(*) FROM log") == [(0,)]
    finally:
        node.stop()
        primary.stop()


def test_kill_9_of_the_node_and_the_primary_while_writes_queue_and_push_loses_none_and_applies_none_twice(
    tmp_path: Path,
) -> None:
    """Issue #20 tests 2 and 3, kept short for CI: EDGENODE_LF_KILLS kills (the issue asks 50), every
    third one of the primary (mid-push or not: P1/P2 of the design), the others of the node."""
    kills = int(os.environ.get("EDGENODE_LF_KILLS", "10"))
    primary = start_primary(tmp_path)
    primary_write(primary, *SCHEMA)
    node = start_node(tmp_path, primary, *LF)
    acknowledged: set[str] = set()
    sent: set[str] = set()
    stop = threading.Event()
    counter = iter(range(10**9))

    def writer() -> None:
        while not stop.is_set():
            marker = f"m{next(counter)}"
            sent.add(marker)
            try:
                response = post(node, ("INSERT INTO log (marker) VALUES (?)", [marker]))
            except httpx.HTTPError:
                time.sleep(0.05)  # the node is down: a new write later (this one was not acknowledged)
                continue
            if response.status_code == 200:
                acknowledged.add(marker)
            else:
                time.sleep(0.05)

    threads = [threading.Thread(target=writer) for _ in range(3)]
    try:
        wait_ready(node)
        for t in threads:
            t.start()
        rng = random.Random(20)
        for i in range(kills):
            time.sleep(rng.uniform(0.1, 0.8))
            victim = primary if i % 3 == 2 else node
            victim.kill()
            victim.start()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        converge(primary, node)
        counts: dict[str, int] = {}
        for (marker,) in primary_rows(primary, "SELECT marker FROM log"):
            counts[marker] = counts.get(marker, 0) + 1
        assert len(acknowledged) > kills
        assert [m for m in acknowledged if counts.get(m) != 1] == []  # none lost, none twice
        assert [m for m, c in counts.items() if c > 1] == []  # unacknowledged ones at most once too
        assert set(counts) <= sent
        assert rows(node, "SELECT * FROM pragma_quick_check") == [["ok"]]
    finally:
        stop.set()
        node.stop()
        primary.stop()
