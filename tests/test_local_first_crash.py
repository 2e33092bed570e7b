"""Targeted `kill -9` of a local-first node at each crash point of docs/local-first.md §6 (N1-N9), with a
real primary and real nodes: `EDGENODE_CRASH_AT=Nx` makes the node (or its replica connection's
process) SIGKILL itself exactly there; the node is then killed whole and restarted without it.

After each: 0 acknowledged writes lost, 0 applied twice on the primary, the replica passes
`quick_check`, and the node converges (its table checksums equal the primary's). A 401/403 from the
primary pauses the pushes (not a conflict) until the node runs with the right token again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local_first_support import LF, conflicts, converge, outbox
from tests.procs import Proc
from tests.test_replica_support import (
    AUTH,
    TOKEN,
    eventually,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)

SCHEMA = (
    "CREATE TABLE log (id INTEGER PRIMARY KEY, marker TEXT NOT NULL)",
    "CREATE TABLE uniq (v TEXT UNIQUE)",
)
# Points hit by a stream of writes (N9, a conflict, has its own test).
STREAM_POINTS = ["N1", "N2", "N3", "N4", "N5", "N6", "N7", "N8"]
# Points inside the replica connection's process: the node's main process lives on, and is then killed too.
OWNER_POINTS = {"N1", "N2", "N4", "N5", "N6", "N9"}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lf_crash")


@pytest.fixture(scope="module")
def primary(shared: Path) -> Iterator[Proc]:
    proc = start_primary(shared)
    primary_write(proc, *SCHEMA)
    yield proc
    proc.stop()


def post(node: Proc, *statements: tuple[str, list[Any]]) -> httpx.Response:
    body = {"statements": [{"sql": sql, "params": params} for sql, params in statements]}
    return httpx.post(node.url + "/api/v1/execute", json=body, headers=AUTH, timeout=10)


def crashed(node: Proc, point: str) -> bool:
    return f"edgenode: crash point {point} " in node.log()


def restart_after_crash(node: Proc) -> None:
    node.kill()  # the whole node: for a point in the connection's process, its main process still runs
    node.env = {}
    node.start()
    wait_ready(node)


def counts_on_primary(primary: Proc, prefix: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (marker,) in primary_rows(primary, f"SELECT marker FROM log WHERE marker LIKE '{prefix}-%'"):
        counts[marker] = counts.get(marker, 0) + 1
    return counts


def set_primary_token(node: Proc, token: str) -> None:
    node.args[node.args.index("--primary-token") + 1] = token


@pytest.mark.parametrize("point", STREAM_POINTS)
def test_a_kill_9_at_each_crash_point_loses_no_acknowledged_write_and_applies_none_twice(
    shared: Path, primary: Proc, point: str
) -> None:
    node = start_node(shared, primary, *LF, name=f"node-{point}")
    acknowledged: list[str] = []
    sent: list[str] = []
    try:
        wait_ready(node)
        node.stop()
        node.env = {"EDGENODE_CRASH_AT": point}
        node.start()
        wait_ready(node)
        deadline = time.monotonic() + 20
        i = 0
        while not crashed(node, point):
            assert time.monotonic() < deadline, f"crash point {point} not reached:\n{node.log()[-3000:]}"
            if point == "N3" and acknowledged:
                # N3 fires 0.3 s after an answer: another write sent meanwhile could be cut mid-request.
                time.sleep(0.05)
                continue
            marker = f"{point}-{i}"
            i += 1
            sent.append(marker)
            try:
                response = post(node, ("INSERT INTO log (marker) VALUES (?)", [marker]))
            except httpx.HTTPError:
                continue  # the node died under this write: not acknowledged
            if response.status_code == 200:
                acknowledged.append(marker)
            time.sleep(0.02)
        if point == "N3":
            assert acknowledged and acknowledged[-1] == sent[-1]  # the crash came after the response
        if point in ("N1", "N2"):
            assert sent[-1] not in acknowledged  # the crash came before the response
        restart_after_crash(node)
        converge(primary, node, timeout=40)
        counts = counts_on_primary(primary, point)
        assert [m for m in acknowledged if counts.get(m) != 1] == []  # none lost, none twice
        assert [m for m, c in counts.items() if c != 1] == []  # unacknowledged ones at most once too
        assert set(counts) <= set(sent)
        if point == "N1":
            assert sent[-1] not in counts  # nothing was queued: the write never happened
        if point == "N2":
            assert counts.get(sent[-1]) == 1  # queued durably before the crash: pushed after it
        assert rows(node, "SELECT * FROM pragma_quick_check") == [["ok"]]
        assert conflicts(node) == []
    finally:
        node.stop()


def test_a_refused_token_pauses_pushes_until_fixed_and_a_kill_9_mid_conflict_move_is_atomic(
    shared: Path, primary: Proc
) -> None:
    """401 from the primary: the writes stay pending (no conflict), `outbox` and `status` say why; with
    the right token they are pushed. Then N9: a write the primary refuses, killed halfway through its
    move to the conflicts, is listed exactly once after the restart and its local effect disappears."""
    node = start_node(shared, primary, *LF, name="node-auth")
    try:
        wait_ready(node)
        node.stop()
        set_primary_token(node, "not-the-primary-token")
        node.start()
        accepted = post(node, ("INSERT INTO log (marker) VALUES ('auth-0')", []))
        assert accepted.status_code == 200, accepted.text
        taken = post(node, ("INSERT INTO uniq (v) VALUES ('auth-taken')", []))
        assert taken.status_code == 200, taken.text
        state = eventually(lambda: (s := outbox(node))["paused"] and s, timeout=20)
        assert "refused this node's credentials (401)" in state["paused"] and state["pending"] == 2
        assert state["failed"] == 0 and conflicts(node) == []
        status = httpx.get(node.url + "/api/v1/status", headers=AUTH).json()["database"]
        assert "--primary-token" in status["outbox"]["paused"]
        assert primary_rows(primary, "SELECT count(*) FROM log WHERE marker = 'auth-0'") == [(0,)]
        # Meanwhile someone else takes the unique value: the queued write will be refused.
        primary_write(primary, "INSERT INTO uniq (v) VALUES ('auth-taken')")
        node.stop()
        set_primary_token(node, TOKEN)
        node.env = {"EDGENODE_CRASH_AT": "N9"}
        node.start()
        eventually(lambda: crashed(node, "N9"), timeout=20)
        restart_after_crash(node)
        converge(primary, node, timeout=40)
        assert primary_rows(primary, "SELECT count(*) FROM log WHERE marker = 'auth-0'") == [(1,)]
        assert primary_rows(primary, "SELECT count(*) FROM uniq WHERE v = 'auth-taken'") == [(1,)]
        listed = conflicts(node)
        assert len(listed) == 1 and listed[0]["write_id"] == taken.json()["write_id"]
        assert outbox(node)["paused"] is None and outbox(node)["failed"] == 1
        assert rows(node, "SELECT * FROM pragma_quick_check") == [["ok"]]
    finally:
        node.stop()
