"""HnswIndex: labels, persistence checks, deletes, and add + query from many threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgenode.rwlock import RWLock
from edgenode.vectors.hnsw import HnswIndex, Stamp
from tests.test_vectors_support import clustered

DIM = 16


def _index(n: int = 1000, capacity: int = 64) -> tuple[HnswIndex, np.ndarray]:
    data = clustered(n, DIM)
    index = HnswIndex("cosine", DIM, 16, 100, 64, capacity=capacity)
    index.bulk_add(data, np.arange(n, dtype=np.int64))
    return index, data


def test_negative_and_64_bit_rowids_round_trip_as_labels() -> None:
    index = HnswIndex("l2", 4, 8, 50, 32)
    ids = [-5, 2**62 + 1, -(2**63), 7]
    index.upsert(np.eye(4, dtype=np.float32), ids)
    got, _ = index.query(np.eye(4, dtype=np.float32), 1)
    assert got[:, 0].tolist() == ids


def test_deletes_and_reinserts_keep_counts_and_hide_deleted_rows() -> None:
    index, data = _index(200)
    assert index.delete([3, 3, 999]) == 1  # repeated and unknown deletes are harmless (feed replays)
    assert index.live == 199 and index.deleted_fraction == 1 / 200
    got, _ = index.query(data[3:4], 5)
    assert 3 not in got[0].tolist()
    index.upsert(data[3:4], [3])
    assert index.live == 200 and not index.deleted
    assert index.query(data[3:4], 1)[0][0, 0] == 3


def test_saved_index_loads_only_with_matching_stamp_and_checksum(tmp_path: Path) -> None:
    index, data = _index(300)
    index.delete([1])
    path = tmp_path / "i.hnsw"
    stamp = index.save(path, "uid-a", position=42)
    expect = Stamp(stamp.format, "uid-a", "cosine", DIM, 16, 100, 0, 0)
    loaded = HnswIndex.load(path, expect, ef_search=64)
    assert loaded is not None
    again, got_stamp = loaded
    assert got_stamp.position == 42 and again.live == 299 and again.deleted == {1}
    assert again.query(data[5:6], 1)[0][0, 0] == 5
    assert HnswIndex.load(path, Stamp(stamp.format, "uid-b", "cosine", DIM, 16, 100, 0, 0), 64) is None
    raw = bytearray(path.read_bytes())
    raw[100] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert HnswIndex.load(path, expect, 64) is None
    assert HnswIndex.load(tmp_path / "missing.hnsw", expect, 64) is None


def test_queries_stay_correct_while_other_threads_add_vectors() -> None:
    index, data = _index(1000, capacity=64)  # small capacity: adds must also resize under the lock
    extra = clustered(4000, DIM, seed=11)
    errors: list[str] = []
    done = threading.Event()

    def add() -> None:
        for start in range(0, len(extra), 50):
            ids = list(range(10_000 + start, 10_000 + start + 50))
            index.upsert(extra[start : start + 50], ids)
        done.set()

    def query() -> None:
        i = 0
        while not done.is_set() or i < 200:
            j = i % 1000
            got, dist = index.query(data[j : j + 1], 1)
            if got[0, 0] != j or dist[0, 0] > 1e-4:
                errors.append(f"query {j} -> {got[0, 0]} at {dist[0, 0]}")
            i += 1

    threads = [threading.Thread(target=add)] + [threading.Thread(target=query) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
    assert index.live == 5000


def test_rwlock_lets_readers_share_and_writers_exclude() -> None:
    lock = RWLock()
    inside: list[str] = []
    with lock.shared(), lock.shared():
        inside.append("two readers")
    entered = threading.Event()
    release = threading.Event()

    def reader() -> None:
        with lock.shared():
            entered.set()
            release.wait(5)

    t = threading.Thread(target=reader)
    t.start()
    entered.wait(5)
    got_write = threading.Event()

    def writer() -> None:
        with lock.exclusive():
            got_write.set()

    w = threading.Thread(target=writer)
    w.start()
    assert not got_write.wait(0.1)  # blocked by the reader
    release.set()
    assert got_write.wait(5)
    t.join()
    w.join()
    assert inside == ["two readers"]


def test_shared_nowait_never_waits_and_yields_to_a_waiting_writer() -> None:
    lock = RWLock()
    with lock.shared_nowait() as first, lock.shared_nowait() as second:
        assert first and second  # readers share
    writer_inside = threading.Event()
    release = threading.Event()

    def writer() -> None:
        with lock.exclusive():
            writer_inside.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    assert writer_inside.wait(5)
    with lock.shared_nowait() as taken:
        assert not taken  # a writer holds it: the caller goes the slow way instead of blocking
    release.set()
    thread.join(5)
    with lock.shared_nowait() as taken:
        assert taken


def test_query_nowait_answers_like_query_when_the_index_is_free() -> None:
    index, data = _index(500)
    fast = index.query_nowait(data[7:8], 10)
    assert fast is not None
    slow = index.query(data[7:8], 10)
    assert fast[0].tolist() == slow[0].tolist()
    with index.lock.shared():
        assert index.query_nowait(data[7:8], 10) is not None  # other readers do not stop it


def test_shared_holders_of_one_mode_share_and_other_modes_wait_their_turn() -> None:
    switches: list[object] = []
    lock = RWLock(on_mode=switches.append)
    with lock.shared(mode=16), lock.shared_nowait(mode=16) as same, lock.shared_nowait(mode=32) as other:
        assert same and not other  # one ef at a time: a query at another ef would see the wrong setting
    assert switches == [16]
    entered, release = threading.Event(), threading.Event()

    def hold_16() -> None:
        with lock.shared(mode=16):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold_16)
    holder.start()
    assert entered.wait(5)
    got_32 = threading.Event()

    def want_32() -> None:
        with lock.shared(mode=32):
            got_32.set()

    waiter = threading.Thread(target=want_32)
    waiter.start()
    assert not got_32.wait(0.1)
    with lock.shared_nowait(mode=16) as taken:
        assert not taken  # a query waiting at ef 32 holds back newcomers at ef 16, so it is not starved
    with lock.shared_nowait() as taken:
        assert taken  # a holder with no mode (saving the index) shares with any ef
    release.set()
    assert got_32.wait(5)
    holder.join(5)
    waiter.join(5)
    assert switches == [16, 32]


def test_a_mode_waiter_that_times_out_lets_the_current_mode_continue() -> None:
    lock = RWLock()
    with lock.shared(mode=1):
        try:
            lock.acquire_shared(timeout=0.05, mode=2)
        except Exception as exc:
            assert type(exc).__name__ == "LockTimeout"
        else:
            raise AssertionError("mode 2 entered beside mode 1")
        with lock.shared_nowait(mode=1) as taken:
            assert taken


def test_queries_at_mixed_ef_from_many_threads_match_serial_answers() -> None:
    index, _ = _index(5000)
    queries = np.random.default_rng(3).standard_normal((100, DIM)).astype(np.float32)
    efs = [1, 300]  # ef 1 is a greedy walk: its answers differ from ef 300's on many queries
    expected = {ef: index.query(queries, 1, ef)[0][:, 0].tolist() for ef in efs}
    assert sum(a != b for a, b in zip(*expected.values(), strict=True)) >= 5
    errors: list[str] = []

    def worker(seed: int) -> None:
        rng = np.random.default_rng(seed)
        for _ in range(500):
            ef = efs[int(rng.integers(len(efs)))]
            i = int(rng.integers(len(queries)))
            got = int(index.query(queries[i : i + 1], 1, ef)[0][0, 0])
            if got != expected[ef][i]:
                errors.append(f"ef {ef} query {i}")

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:5]
