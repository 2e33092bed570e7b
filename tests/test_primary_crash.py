"""kill -9 of the primary mid-write, mid-rollover and mid-push: it restarts consistent, with nothing
acknowledged lost, and replicas resync to match it row for row."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import libsql
import pytest

from edgenode.primary.client import execute
from tests.procs import Proc, start

TOKEN = "crash-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def primary_args(tmp_path: Path, *extra: str) -> list[str]:
    # Keep every generation: these tests check lagging replicas catch up, not the 410 beyond retention.
    args = ["primary", "--data-dir", str(tmp_path / "primary"), "--auth-token", TOKEN, "--no-migrate"]
    return [*args, "--keep-generations", "1000", *extra]


def restart(tmp_path: Path, old: Proc, *extra: str, env: dict[str, str] | None = None) -> Proc:
    return start(primary_args(tmp_path, *extra), tmp_path, "primary", env=env, port=old.port)


def primary_rows(url: str) -> list[tuple[object, ...]]:
    return execute(url, ["SELECT id, hex(data) FROM t ORDER BY id"], TOKEN)[0]


def replica_rows(conn: libsql.Connection) -> list[tuple[object, ...]]:
    return conn.execute("SELECT id, hex(data) FROM t ORDER BY id").fetchall()


class WriteLoad:
    """Inserts one row per transaction until stopped or the primary dies; remembers what was acknowledged."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acked: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.next_id = 1

    def start(self, first_id: int) -> WriteLoad:
        self.next_id = first_id
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                execute(
                    self.url,
                    [("INSERT INTO t(id, data) VALUES (?, randomblob(1500 + abs(random() % 6000)))", [self.next_id])],
                    TOKEN,
                    timeout=5,
                )
            except Exception:
                return
            self.acked.append(self.next_id)
            self.next_id += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def sync_until_consistent(conn: libsql.Connection, url: str) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            conn.sync()
            if replica_rows(conn) == primary_rows(url):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            assert replica_rows(conn) == primary_rows(url)
        time.sleep(0.1)


@pytest.mark.parametrize("max_frames", ["100000", "40"], ids=["writes", "writes-and-rollovers"])
def test_kill_9_under_write_load_loses_nothing_acknowledged(tmp_path: Path, max_frames: str) -> None:
    proc = start(primary_args(tmp_path, "--generation-max-frames", max_frames), tmp_path, "primary")
    execute(proc.url, ["CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
    early = libsql.connect(str(tmp_path / "early.db"), sync_url=proc.url, auth_token=TOKEN)
    early.sync()
    acked: list[int] = []
    try:
        for round_no in range(3):
            load = WriteLoad(proc.url).start(first_id=1 + round_no * 100_000)
            time.sleep(0.6 + 0.2 * round_no)
            if round_no == 1:
                early.sync()  # a replica caught mid-load, somewhere inside a generation
            proc.kill()
            load.stop()
            acked.extend(load.acked)
            proc = restart(tmp_path, proc, "--generation-max-frames", max_frames)
            present = {row[0] for row in primary_rows(proc.url)}
            missing = [i for i in acked if i not in present]
            assert not missing, f"acknowledged rows lost: {missing[:10]}"
            assert execute(proc.url, ["PRAGMA quick_check"], TOKEN)[0] == [("ok",)]
        assert len(acked) > 30
        sync_until_consistent(early, proc.url)
        fresh = libsql.connect(str(tmp_path / "fresh.db"), sync_url=proc.url, auth_token=TOKEN)
        fresh.sync()
        assert replica_rows(fresh) == primary_rows(proc.url)
        assert fresh.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        proc.stop()


@pytest.mark.parametrize("point", ["rollover-archived", "rollover-intent", "rollover-checkpointed"])
def test_kill_9_inside_a_rollover_restarts_consistent(tmp_path: Path, point: str) -> None:
    proc = start(primary_args(tmp_path), tmp_path, "primary")
    execute(proc.url, ["CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
    execute(proc.url, [("INSERT INTO t VALUES (?, randomblob(5000))", [i]) for i in range(1, 11)], TOKEN)
    replica = libsql.connect(str(tmp_path / "r.db"), sync_url=proc.url, auth_token=TOKEN)
    replica.sync()
    execute(proc.url, [("INSERT INTO t VALUES (?, randomblob(5000))", [i]) for i in range(11, 21)], TOKEN)
    proc.stop()
    proc = restart(tmp_path, proc, env={"EDGENODE_PRIMARY_CRASH_AT": point})
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{proc.url}/rollover", headers=AUTH, timeout=10)
    proc.popen.wait(10)
    proc = restart(tmp_path, proc)
    try:
        generation = httpx.get(f"{proc.url}/info", headers=AUTH).json()["current_generation"]
        assert generation == (1 if point == "rollover-archived" else 2)
        assert [r[0] for r in primary_rows(proc.url)] == list(range(1, 21))
        sync_until_consistent(replica, proc.url)
        fresh = libsql.connect(str(tmp_path / "fresh.db"), sync_url=proc.url, auth_token=TOKEN)
        fresh.sync()
        assert replica_rows(fresh) == primary_rows(proc.url)
    finally:
        proc.stop()


@pytest.mark.parametrize("point", ["push-half-written", "push-appended"])
def test_kill_9_inside_a_push_then_the_replica_retries(tmp_path: Path, point: str) -> None:
    proc = start(primary_args(tmp_path), tmp_path, "primary")
    execute(proc.url, ["CREATE TABLE t(id INTEGER PRIMARY KEY, data BLOB)"], TOKEN)
    offline = libsql.connect(str(tmp_path / "o.db"), sync_url=proc.url, auth_token=TOKEN, offline=True)
    offline.sync()
    offline.execute("INSERT INTO t SELECT value, randomblob(3000) FROM json_each('[1,2,3,4,5,6,7,8]')")
    offline.commit()
    proc.stop()
    proc = restart(tmp_path, proc, env={"EDGENODE_PRIMARY_CRASH_AT": point})
    try:
        offline.sync()
    except Exception:
        pass  # the primary died mid-request
    proc.popen.wait(10)
    proc = restart(tmp_path, proc)
    try:
        ids = [r[0] for r in primary_rows(proc.url)]
        # A torn push is an uncommitted tail SQLite drops; a fully written one is committed. Never half.
        assert ids == ([] if point == "push-half-written" else list(range(1, 9)))
        offline.sync()  # retried: applied now, or recognised as already applied
        assert [r[0] for r in primary_rows(proc.url)] == list(range(1, 9))
        assert replica_rows(offline) == primary_rows(proc.url)
        assert execute(proc.url, ["PRAGMA quick_check"], TOKEN)[0] == [("ok",)]
    finally:
        proc.stop()
