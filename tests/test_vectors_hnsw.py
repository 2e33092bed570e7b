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
