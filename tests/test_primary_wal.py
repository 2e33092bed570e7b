"""The WAL verifier agrees with SQLite about which frames are committed, and frames it encodes are adopted."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import apsw
import pytest

from edgenode.primary.generations import CheckpointNeeded, Frames, Gone, PrimaryStore
from edgenode.primary.wal import FRAME_SIZE, WAL_HEADER_SIZE, WalHeader, WalReader, checksum_bytes, encode_frames
from edgenode.rwlock import LockTimeout, RWLock


def open_db(path: Path) -> tuple[apsw.Connection, list[int]]:
    conn = apsw.Connection(str(path))
    conn.config(apsw.SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1)
    conn.execute("PRAGMA page_size=4096; PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0")
    seen: list[int] = []

    def hook(c: apsw.Connection, name: str, pages: int) -> int:
        seen.append(pages)
        return apsw.SQLITE_OK

    conn.set_wal_hook(hook)
    return conn, seen


def test_verified_commit_frames_match_sqlite_mxframe(tmp_path: Path) -> None:
    conn, seen = open_db(tmp_path / "db")
    conn.execute("CREATE TABLE t(x)")
    reader = WalReader(tmp_path / "db-wal")
    for i in range(30):
        conn.execute("INSERT INTO t SELECT randomblob(?)", (500 * i,))
        assert reader.refresh().committed == seen[-1]
    assert reader.state.commits[-1] == seen[-1]
    assert len(reader.state.commits) == len(seen)


def test_torn_and_uncommitted_tail_is_not_served(tmp_path: Path) -> None:
    conn, seen = open_db(tmp_path / "db")
    conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(9000))")
    committed = seen[-1]
    wal = tmp_path / "db-wal"
    good = wal.read_bytes()
    # A transaction cut before its commit frame, then a torn frame: SQLite ignores both.
    conn.execute("INSERT INTO t VALUES (randomblob(20000))")
    full = wal.read_bytes()
    without_commit = full[: len(full) - FRAME_SIZE]
    wal.write_bytes(without_commit)
    assert WalReader(wal).refresh().committed == committed
    wal.write_bytes(full[: len(full) - 100])
    assert WalReader(wal).refresh().committed == committed
    corrupt = bytearray(full)
    corrupt[len(good) + 30] ^= 0xFF
    wal.write_bytes(bytes(corrupt))
    assert WalReader(wal).refresh().committed == committed


def test_checksum_matches_sqlite_header(tmp_path: Path) -> None:
    conn, _ = open_db(tmp_path / "db")
    conn.execute("CREATE TABLE t(x)")
    raw = (tmp_path / "db-wal").read_bytes()[:WAL_HEADER_SIZE]
    header = WalHeader.parse(raw)
    assert header is not None
    assert checksum_bytes(raw[:24], header.big_endian) == header.checksum


def test_frames_encoded_for_another_wal_are_adopted_by_sqlite(tmp_path: Path) -> None:
    a, _ = open_db(tmp_path / "a")
    a.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    shutil.copy(tmp_path / "a", tmp_path / "b")
    shutil.copy(tmp_path / "a-wal", tmp_path / "b-wal")
    b, _ = open_db(tmp_path / "b")
    b.execute("INSERT INTO t SELECT randomblob(5000) FROM t; CREATE TABLE u(y)")
    state_a = WalReader(tmp_path / "a-wal").refresh()
    reader_b = WalReader(tmp_path / "b-wal")
    state_b = reader_b.refresh()
    new = reader_b.read_frames(state_a.committed + 1, state_b.committed)
    assert state_a.header is not None
    data, _ = encode_frames(new, state_a.header, state_a.checksum)
    with open(tmp_path / "a-wal", "r+b") as f:
        f.seek(WAL_HEADER_SIZE + state_a.committed * FRAME_SIZE)
        f.write(data)
    fd = os.open(tmp_path / "a-shm", os.O_RDWR)
    os.pwrite(fd, bytes(96), 0)
    os.close(fd)
    assert a.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    assert a.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    assert WalReader(tmp_path / "a-wal").refresh().committed == state_b.committed


@pytest.fixture
def store(tmp_path: Path) -> PrimaryStore:
    s = PrimaryStore(tmp_path / "data", generation_max_frames=10_000, keep_generations=1)
    s.open()
    yield s
    s.close()


def test_pull_ends_on_commit_frames_and_reports_checkpoint_needed(store: PrimaryStore) -> None:
    conn = store.connect()
    conn.execute("CREATE TABLE t(x)")
    for _ in range(5):
        conn.execute("INSERT INTO t VALUES (randomblob(12000))")
    committed = store.committed_frames()
    result = store.pull(1, 1, 3)
    assert isinstance(result, Frames)
    assert int.from_bytes(result.data[-FRAME_SIZE + 4 : -FRAME_SIZE + 8], "big") > 0
    assert store.pull(1, committed + 1, committed + 129) == CheckpointNeeded(1, committed)
    assert isinstance(store.pull(1, committed + 5, committed + 129), Gone)
    conn.close()


def test_rollover_archives_frames_and_prunes_beyond_retention(store: PrimaryStore) -> None:
    conn = store.connect()
    conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    first = store.committed_frames()
    assert store.rollover(force=True)
    assert store.generation == 2
    old = store.pull(1, 1, first + 1)
    assert isinstance(old, Frames) and old.last == first
    assert store.pull(1, first + 1, first + 10) == CheckpointNeeded(2, first)
    conn.execute("INSERT INTO t VALUES (2)")
    assert store.rollover(force=True) and store.rollover(force=True)
    assert isinstance(store.pull(1, 1, 10), Gone)
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(2,)]
    conn.close()


def test_restart_finishes_an_interrupted_rollover(tmp_path: Path) -> None:
    store = PrimaryStore(tmp_path / "data")
    store.open()
    conn = store.connect()
    conn.execute("CREATE TABLE t(x); INSERT INTO t VALUES (1)")
    conn.close()
    # What a crash between writing the intent and the checkpoint leaves behind.
    store._write_state(type(store._state)(generation=1, rollover_to=2))
    store.close()
    again = PrimaryStore(tmp_path / "data")
    again.open()
    assert again.generation == 2
    assert again.committed_frames() == 0
    conn = again.connect()
    assert conn.execute("SELECT count(*) FROM t").fetchall() == [(1,)]
    conn.close()
    again.close()


def test_a_second_primary_on_the_same_directory_is_refused(store: PrimaryStore, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="already running"):
        PrimaryStore(tmp_path / "data").open()


def test_a_polite_exclusive_waiter_does_not_hold_back_readers() -> None:
    lock = RWLock()
    outcomes: list[str] = []

    def wait_exclusive(polite: bool) -> None:
        try:
            lock.acquire_exclusive(0.5, polite)
            outcomes.append("got")
        except LockTimeout:
            outcomes.append("timed out")

    lock.acquire_shared()
    waiter = threading.Thread(target=wait_exclusive, args=(True,))
    waiter.start()
    time.sleep(0.1)
    lock.acquire_shared(timeout=0.1)  # not held back by the polite waiter
    lock.release_shared()
    waiter.join()
    impolite = threading.Thread(target=wait_exclusive, args=(False,))
    impolite.start()
    time.sleep(0.1)
    with pytest.raises(LockTimeout):
        lock.acquire_shared(timeout=0.1)  # queued behind the waiting writer
    impolite.join()
    assert outcomes == ["timed out", "timed out"]
    lock.release_shared()
    lock.acquire_exclusive(timeout=0.1)
    lock.release_exclusive()


def test_a_pull_without_extension_never_goes_past_the_asked_range(store: PrimaryStore) -> None:
    conn = store.connect()
    conn.execute("BEGIN; CREATE TABLE t(x); INSERT INTO t VALUES (randomblob(40000)); COMMIT")
    committed = store.committed_frames()
    whole = store.pull(1, 1, 2)
    assert isinstance(whole, Frames) and whole.last == committed
    first = store.pull(1, 1, 2, extend=False)
    assert isinstance(first, Frames) and (first.first, first.last) == (1, 1)
    conn.close()


@pytest.mark.parametrize("big_endian", [False, True])
def test_vectorised_frame_checksums_equal_sqlites_word_by_word_sum(big_endian: bool) -> None:
    import random

    from edgenode.primary.wal import _step, frame_contributions

    rng = random.Random(7)
    frames = bytes(rng.getrandbits(8) for _ in range(3 * FRAME_SIZE))
    seed = (rng.getrandbits(32), rng.getrandbits(32))
    fast = seed
    for contribution in frame_contributions(frames, big_endian):
        fast = _step(fast, contribution)
    slow = seed
    for i in range(3):
        frame = frames[i * FRAME_SIZE : (i + 1) * FRAME_SIZE]
        slow = checksum_bytes(frame[:8], big_endian, *slow)
        slow = checksum_bytes(frame[24:], big_endian, *slow)
    assert fast == slow
