"""kill -9 a replica node at random moments during continuous writes and syncs, over and over.

After every kill the replica file must pass `PRAGMA quick_check` (opened read-only while the node is
down), the restarted node must catch up, and no write that was acknowledged (through the node or
directly on the primary) may be missing. The primary rolls generations over every few hundred
frames, so kills also land inside generation changes.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path

import apsw
import httpx

from edgenode.primary.client import HranaClientError
from tests.procs import Proc
from tests.test_replica_support import (
    AUTH,
    execute,
    primary_rows,
    primary_write,
    rows,
    start_node,
    start_primary,
    wait_ready,
)

KILLS = 20


class Writers:
    """Writes rows with unique ids through the node and straight to the primary; remembers the acked ones."""

    def __init__(self, primary: Proc) -> None:
        self.primary = primary
        self.node: Proc | None = None
        self.acked: set[int] = set()
        self.next_id = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def _id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id

    def through_node(self, node: Proc) -> None:
        while not self.stop.is_set():
            row = self._id()
            try:
                response = execute(node, ("INSERT INTO acked(id, via, pad) VALUES (?, 'node', randomblob(600))", [row]))
            except httpx.HTTPError:
                continue  # killed mid-request: not acknowledged
            if response.status_code == 200:
                self.acked.add(row)

    def on_primary(self) -> None:
        while not self.stop.is_set():
            row = self._id()
            try:
                primary_write(
                    self.primary, ("INSERT INTO acked(id, via, pad) VALUES (?, 'primary', randomblob(600))", [row])
                )
            except (HranaClientError, httpx.HTTPError):
                continue
            self.acked.add(row)
            self.stop.wait(0.01)

    def start(self, node: Proc) -> None:
        self.stop.clear()
        self.threads = [
            threading.Thread(target=self.through_node, args=(node,), daemon=True),
            threading.Thread(target=self.on_primary, daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def halt(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(20)


def quick_check(path: Path) -> list[str]:
    conn = apsw.Connection(f"file:{path}?mode=ro", flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    try:
        return [row[0] for row in conn.execute("PRAGMA quick_check")]
    finally:
        conn.close()


def test_kill_9_at_random_moments_never_corrupts_the_replica_or_loses_an_acknowledged_write(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    primary = start_primary(tmp_path, "--generation-max-frames", "400")
    primary_write(primary, "CREATE TABLE acked(id INTEGER PRIMARY KEY, via TEXT, pad BLOB)")
    writers = Writers(primary)
    replica = tmp_path / "node" / "replica" / "replica.db"
    node: Proc | None = None
    port: int | None = None
    try:
        for kill in range(KILLS):
            node = start_node(tmp_path, primary, port=port)
            port = node.port
            wait_ready(node, timeout=30)
            # Caught up: every write acknowledged before the previous kill is here.
            before = set(writers.acked)
            synced = httpx.post(node.url + "/api/v1/sync", headers=AUTH, timeout=15)
            assert synced.status_code == 200, synced.text
            present = {r[0] for r in rows(node, "SELECT id FROM acked")}
            missing = before - present
            assert not missing, (
                f"after kill {kill}: {len(missing)} acknowledged writes missing, e.g. {sorted(missing)[:5]}"
            )

            writers.start(node)
            # Kill at a random moment: mid-write, mid-sync, mid-generation change, or idle.
            threading.Event().wait(rng.uniform(0.05, 0.8))
            node.kill()
            writers.halt()
            assert quick_check(replica) == ["ok"], f"replica corrupt after kill {kill}"

        node = start_node(tmp_path, primary, port=port)
        wait_ready(node, timeout=30)
        httpx.post(node.url + "/api/v1/sync", headers=AUTH, timeout=15).raise_for_status()
        present = {r[0] for r in rows(node, "SELECT id FROM acked")}
        assert writers.acked <= present
        on_primary = {r[0] for r in primary_rows(primary, "SELECT id FROM acked")}
        assert present == on_primary
        assert len(writers.acked) > 100
        generation = httpx.get(node.url + "/api/v1/status", headers=AUTH).json()["database"]["generation"]
        assert generation > 1, "the run was meant to cross generation rollovers"
    finally:
        writers.halt()
        if node is not None:
            node.stop()
        primary.stop()
