"""`Idempotency-Key` on `POST /api/v1/execute`: a retry returns the first outcome and applies nothing.

The key is recorded with the write, in its transaction, on the side that commits it (the node's
own file standalone, the primary for a replica), so the guarantee holds across `kill -9` of the
node and of the primary: clients that retry every unanswered write under its key end with each
write applied exactly once.
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.procs import Proc, start
from tests.test_replica_support import (
    AUTH,
    primary_rows,
    primary_write,
    start_node,
    start_primary,
    wait_ready,
)


def keyed(node: Proc, key: str, *statements: tuple[str, list[Any]], timeout: float = 10.0) -> httpx.Response:
    body = {"statements": [{"sql": sql, "params": params} for sql, params in statements]}
    headers = {**AUTH, "Idempotency-Key": key}
    return httpx.post(node.url + "/api/v1/execute", json=body, headers=headers, timeout=timeout)


def count(node: Proc, sql: str) -> int:
    response = httpx.post(node.url + "/api/v1/query", json={"sql": sql}, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["rows"][0][0]


def standalone(tmp_path: Path) -> Proc:
    return start(["serve", "--data-dir", str(tmp_path / "sa"), "--auth-token", AUTH["Authorization"][7:]], tmp_path)


def test_a_retry_with_the_same_key_returns_the_first_outcome_and_applies_nothing_even_after_a_restart(
    tmp_path: Path,
) -> None:
    node = standalone(tmp_path)
    try:
        assert keyed(node, "setup", ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", [])).status_code == 200
        insert = ("INSERT INTO t (v) VALUES (?)", ["a"])
        first = keyed(node, "k-1", insert, ("UPDATE t SET v = 'b' WHERE id = -1", []))
        assert first.status_code == 200, first.text
        assert first.headers["Idempotent-Replayed"] == "false"
        again = keyed(node, "k-1", insert, ("UPDATE t SET v = 'b' WHERE id = -1", []))
        assert again.status_code == 200, again.text
        assert again.headers["Idempotent-Replayed"] == "true"
        assert (
            again.json()["results"]
            == first.json()["results"]
            == [
                {"rows_affected": 1, "last_insert_rowid": 1},
                {"rows_affected": 0, "last_insert_rowid": None},
            ]
        )
        node.kill()
        node = node.start()
        after_crash = keyed(node, "k-1", insert, ("UPDATE t SET v = 'b' WHERE id = -1", []))
        assert after_crash.headers["Idempotent-Replayed"] == "true"
        assert after_crash.json()["results"] == first.json()["results"]
        assert count(node, "SELECT count(*) FROM t") == 1
    finally:
        node.stop()


def test_a_key_reused_for_another_request_is_422_and_a_malformed_key_is_400(tmp_path: Path) -> None:
    node = standalone(tmp_path)
    try:
        keyed(node, "setup", ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", []))
        assert keyed(node, "k", ("INSERT INTO t (v) VALUES (?)", ["a"])).status_code == 200
        reused = keyed(node, "k", ("INSERT INTO t (v) VALUES (?)", ["other"]))
        assert reused.status_code == 422
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        assert "different request" in reused.json()["error"]["message"]
        for bad in ("", "has space", "x" * 256):
            response = keyed(node, bad, ("INSERT INTO t (v) VALUES (?)", ["a"]))
            assert response.status_code == 400, bad
            assert response.json()["error"]["code"] == "invalid_idempotency_key"
        # A write that failed recorded nothing: its retry runs (and may now succeed).
        failed = keyed(node, "k2", ("INSERT INTO t (id, v) VALUES (1, 'dup')", []))
        assert failed.status_code == 400
        keyed(node, "fix", ("DELETE FROM t", []))
        assert keyed(node, "k2", ("INSERT INTO t (id, v) VALUES (1, 'dup')", [])).status_code == 200
        assert count(node, "SELECT count(*) FROM t") == 1
    finally:
        node.stop()


def test_on_a_replica_the_key_is_recorded_on_the_primary_with_the_write(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    node = start_node(tmp_path, primary)
    try:
        wait_ready(node)
        first = keyed(node, "r-1", ("INSERT INTO t (v) VALUES (?)", ["a"]))
        assert first.status_code == 200, first.text
        again = keyed(node, "r-1", ("INSERT INTO t (v) VALUES (?)", ["a"]))
        assert (again.status_code, again.headers["Idempotent-Replayed"]) == (200, "true")
        assert again.json()["results"] == first.json()["results"] == [{"rows_affected": 1, "last_insert_rowid": 1}]
        assert primary_rows(primary, "SELECT count(*) FROM t") == [(1,)]
        assert primary_rows(primary, "SELECT key FROM _edgenode_idempotency") == [("r-1",)]
        assert keyed(node, "r-1", ("INSERT INTO t (v) VALUES (?)", ["b"])).status_code == 422
    finally:
        node.stop()
        primary.stop()


class RetryingClients:
    """Each thread writes numbered rows, one key per write, retrying each unanswered write under its key."""

    def __init__(self, node: Proc, threads: int) -> None:
        self.node = node
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.replayed = 0
        self.retried = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True) for t in range(threads)]

    def run(self, thread: int) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"w{thread}-{n}"
            statement = ("INSERT INTO log (k, pad) VALUES (?, randomblob(300))", [key])
            while True:
                try:
                    response = keyed(self.node, key, statement, timeout=5)
                except httpx.HTTPError:
                    response = None
                if response is not None and response.status_code == 200:
                    self.acked.append(key)
                    self.replayed += response.headers["Idempotent-Replayed"] == "true"
                    break
                if response is not None and response.status_code not in (503, 409):
                    self.failures.append(f"{key}: {response.status_code} {response.text}")
                    return
                # No answer, or "try again": the write may or may not have committed. Retry it.
                self.retried += 1
                if self.stop.is_set() and time.monotonic() > self.give_up:
                    self.failures.append(f"{key}: still unanswered at the end")
                    return
                time.sleep(0.05)

    def __enter__(self) -> RetryingClients:
        self.give_up = float("inf")
        for thread in self.threads:
            thread.start()
        return self

    def finish(self, grace: float) -> None:
        """Stop new writes; let the pending ones retry (up to `grace` s) until answered."""
        self.give_up = time.monotonic() + grace
        self.stop.set()
        for thread in self.threads:
            thread.join(grace + 10)

    def __exit__(self, *exc: object) -> None:
        self.give_up = 0.0
        self.stop.set()


def exactly_once(clients: RetryingClients, counts: dict[str, int]) -> None:
    print(f"acked {len(clients.acked)}, retried {clients.retried}, answered by a replay {clients.replayed}")
    assert not clients.failures, clients.failures[:5]
    duplicates = {k: c for k, c in counts.items() if c > 1}
    lost = set(clients.acked) - set(counts)
    assert not duplicates, f"{len(duplicates)} writes applied twice, e.g. {list(duplicates.items())[:5]}"
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {sorted(lost)[:5]}"
    # Every write a client started was eventually answered: what is stored is exactly what was acked.
    assert set(counts) == set(clients.acked)
    assert clients.retried > 0, "no write was ever left unanswered: the kills did not land mid-request"


def test_kill_9_of_replica_node_and_primary_with_retrying_clients_applies_every_write_exactly_once(
    tmp_path: Path,
) -> None:
    rng = random.Random(13)
    primary = start_primary(tmp_path)
    primary_write(primary, "CREATE TABLE log (id INTEGER PRIMARY KEY, k TEXT NOT NULL, pad BLOB)")
    node = start_node(tmp_path, primary)
    wait_ready(node)
    try:
        with RetryingClients(node, threads=3) as clients:
            for kill in range(8):
                time.sleep(rng.uniform(0.3, 1.2))
                victim = node if kill % 2 == 0 else primary
                victim.kill()
                victim.start()
            clients.finish(grace=20)
        counts = dict(primary_rows(primary, "SELECT k, count(*) FROM log GROUP BY k"))
        exactly_once(clients, counts)
        assert len(clients.acked) > 20
    finally:
        node.stop()
        primary.stop()


def test_kill_9_of_a_standalone_node_with_retrying_clients_applies_every_write_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(31)
    node = standalone(tmp_path)
    keyed(node, "setup", ("CREATE TABLE log (id INTEGER PRIMARY KEY, k TEXT NOT NULL, pad BLOB)", []))
    try:
        with RetryingClients(node, threads=3) as clients:
            for _ in range(5):
                time.sleep(rng.uniform(0.3, 1.0))
                node.kill()
                node.start()
            clients.finish(grace=20)
        response = httpx.post(
            node.url + "/api/v1/query", json={"sql": "SELECT k, count(*) FROM log GROUP BY k"}, headers=AUTH
        )
        exactly_once(clients, {k: c for k, c in response.json()["rows"]})
        assert len(clients.acked) > 20
    finally:
        node.stop()


def test_keys_older_than_the_retention_are_forgotten_so_a_late_retry_writes_again(tmp_path: Path) -> None:
    args = ["serve", "--data-dir", str(tmp_path / "sa"), "--auth-token", AUTH["Authorization"][7:]]
    node = start([*args, "--idempotency-retention", "0.5"], tmp_path)
    try:
        keyed(node, "setup", ("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", []))
        assert keyed(node, "old", ("INSERT INTO t (v) VALUES ('a')", [])).headers["Idempotent-Replayed"] == "false"
        assert keyed(node, "old", ("INSERT INTO t (v) VALUES ('a')", [])).headers["Idempotent-Replayed"] == "true"
        time.sleep(0.8)
        assert keyed(node, "old", ("INSERT INTO t (v) VALUES ('a')", [])).headers["Idempotent-Replayed"] == "false"
        assert count(node, "SELECT count(*) FROM t") == 2
        # Purged by that write: "setup" and the first "old"; only the new "old" is left.
        assert count(node, "SELECT count(*) FROM _edgenode_idempotency") == 1
    finally:
        node.stop()


def test_concurrent_requests_with_one_key_on_a_replica_apply_the_write_once(tmp_path: Path) -> None:
    primary = start_primary(tmp_path)
    primary_write(primary, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    node = start_node(tmp_path, primary)
    try:
        wait_ready(node)
        responses: list[httpx.Response] = []
        threads = [
            threading.Thread(
                target=lambda: responses.append(keyed(node, "same", ("INSERT INTO t (v) VALUES ('a')", [])))
            )
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(responses) == 6
        assert {r.status_code for r in responses} <= {200, 409}, [r.text for r in responses]
        fresh = [r for r in responses if r.status_code == 200 and r.headers["Idempotent-Replayed"] == "false"]
        assert len(fresh) == 1
        assert primary_rows(primary, "SELECT count(*) FROM t") == [(1,)]
    finally:
        node.stop()
        primary.stop()
