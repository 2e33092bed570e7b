"""hnswlib index wrapper: build, incremental updates, deletes, a reader/writer lock, persistence.

hnswlib is not safe for add + query at the same time, so queries take the shared side of an
`RWLock` and every mutation (add, mark_deleted, resize) the exclusive side. hnswlib releases the
GIL while it works, so queries in threads run in parallel. Its ef is a setting of the whole index,
so each query holds the lock in the mode of its ef: queries at the same ef share, and the lock
switches the setting between them (see `edgenode.rwlock`). A query at any ef therefore costs what
raw hnswlib costs, with no exclusive hold.

Persistence: `<path>` holds hnswlib's own format and `<path>.json` a `Stamp` with the file's
SHA-256, the feed position it reflects and the identity of the data it came from. Files are
untrusted: `load` returns None on any mismatch (missing, corrupt, other collection or primary),
and the caller rebuilds.

Labels are SQLite rowids reinterpreted as uint64, so negative and 64-bit rowids round-trip.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import hnswlib
import numpy as np

from edgenode.rwlock import RWLock

SPACES = {"cosine": "cosine", "l2": "l2", "ip": "ip"}
FORMAT = 1


@dataclass(frozen=True)
class Stamp:
    """What a persisted index file claims to be; compared field by field on load."""

    format: int
    uid: str
    metric: str
    dim: int
    m: int
    ef_construction: int
    position: int
    count: int
    sha256: str = ""


def to_labels(rowids: np.ndarray | list[int]) -> np.ndarray:
    return np.asarray(rowids, dtype=np.int64).view(np.uint64)


def to_rowids(labels: np.ndarray) -> np.ndarray:
    return np.asarray(labels, dtype=np.uint64).view(np.int64)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


class HnswIndex:
    def __init__(self, metric: str, dim: int, m: int, ef_construction: int, ef_search: int, capacity: int = 1024):
        self.metric = metric
        self.dim = dim
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.lock = RWLock(on_mode=self._set_ef)
        self.index = hnswlib.Index(space=SPACES[metric], dim=dim)
        self.index.init_index(max_elements=max(capacity, 16), M=m, ef_construction=ef_construction)
        # Labels marked deleted: they keep their slot until a rebuild, and re-adding one un-deletes it.
        self.deleted: set[int] = set()

    def _set_ef(self, ef: int) -> None:
        self.index.set_ef(ef)

    @property
    def total(self) -> int:
        return self.index.element_count

    @property
    def live(self) -> int:
        return self.index.element_count - len(self.deleted)

    @property
    def deleted_fraction(self) -> float:
        return len(self.deleted) / self.total if self.total else 0.0

    def _ensure_capacity(self, extra: int) -> None:
        needed = self.index.element_count + extra
        if needed > self.index.max_elements:
            self.index.resize_index(max(needed, int(self.index.max_elements * 1.5)))

    def bulk_add(
        self,
        vectors: np.ndarray,
        rowids: np.ndarray,
        threads: int = -1,
        progress: Callable[[int], None] | None = None,
        chunk: int = 10_000,
    ) -> None:
        """Add many new vectors (not yet in the index), in chunks so progress can be reported."""
        with self.lock.exclusive():
            self._ensure_capacity(len(rowids))
        for start in range(0, len(rowids), chunk):
            with self.lock.exclusive():
                self.index.add_items(vectors[start : start + chunk], to_labels(rowids[start : start + chunk]), threads)
            if progress:
                progress(min(start + chunk, len(rowids)))

    def upsert(self, vectors: np.ndarray, rowids: list[int]) -> None:
        """Insert or replace; hnswlib updates an existing label in place and un-deletes a deleted one."""
        if not rowids:
            return
        labels = to_labels(rowids)
        with self.lock.exclusive():
            self._ensure_capacity(len(rowids))
            self.index.add_items(vectors, labels, 1)
            self.deleted.difference_update(labels.tolist())

    def delete(self, rowids: list[int]) -> int:
        removed = 0
        with self.lock.exclusive():
            for label in to_labels(rowids).tolist():
                try:
                    self.index.mark_deleted(label)
                except RuntimeError:
                    continue  # not in the index or already deleted: replaying a change is fine
                removed += 1
                self.deleted.add(label)
        return removed

    def query(
        self,
        vectors: np.ndarray,
        k: int,
        ef: int | None = None,
        filter: Callable[[int], bool] | None = None,
        threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rowids and distances, shape (len(vectors), k'), where k' = min(k, live)."""
        k = min(k, self.live)
        if k <= 0:
            return np.empty((len(vectors), 0), np.int64), np.empty((len(vectors), 0), np.float32)
        with self.lock.shared(mode=ef or self.ef_search):
            labels, distances = self.index.knn_query(vectors, k=k, num_threads=threads, filter=filter)
        return to_rowids(labels), distances

    def query_nowait(self, vectors: np.ndarray, k: int, ef: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """`query`, or None when the lock is not free right now for a query at this ef."""
        k = min(k, self.live)
        if k <= 0:
            return None
        if not self.lock.try_acquire_shared(ef or self.ef_search):
            return None
        try:
            labels, distances = self.index.knn_query(vectors, k=k, num_threads=1)
        finally:
            self.lock.release_shared()
        return to_rowids(labels), distances

    def stamp(self, uid: str, position: int) -> Stamp:
        return Stamp(FORMAT, uid, self.metric, self.dim, self.m, self.ef_construction, position, self.live)

    def save(self, path: Path, uid: str, position: int) -> Stamp:
        """Write index then stamp, each atomically; a crash between them leaves a checksum mismatch."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with self.lock.shared():
            self.index.save_index(str(tmp))
            stamp = self.stamp(uid, position)
            deleted = sorted(self.deleted)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        stamp = Stamp(**{**asdict(stamp), "sha256": _sha256(tmp)})
        os.replace(tmp, path)
        meta_tmp = path.with_name(path.name + ".json.tmp")
        meta_tmp.write_text(json.dumps({**asdict(stamp), "deleted": deleted}))
        os.replace(meta_tmp, path.with_name(path.name + ".json"))
        return stamp

    @classmethod
    def load(cls, path: Path, expect: Stamp, ef_search: int) -> tuple[HnswIndex, Stamp] | None:
        """The index at `path` if its stamp matches `expect` (ignoring position/count) and its checksum holds."""
        meta = path.with_name(path.name + ".json")
        try:
            raw = json.loads(meta.read_text())
            deleted = {int(label) for label in raw.pop("deleted", [])}
            stamp = Stamp(**raw)
        except (OSError, ValueError, TypeError):
            return None
        same = (stamp.format, stamp.uid, stamp.metric, stamp.dim, stamp.m, stamp.ef_construction) == (
            expect.format,
            expect.uid,
            expect.metric,
            expect.dim,
            expect.m,
            expect.ef_construction,
        )
        if not same or not path.exists() or _sha256(path) != stamp.sha256:
            return None
        self = cls.__new__(cls)
        self.metric, self.dim, self.m, self.ef_construction = stamp.metric, stamp.dim, stamp.m, stamp.ef_construction
        self.ef_search = ef_search
        self.lock = RWLock(on_mode=self._set_ef)
        self.index = hnswlib.Index(space=SPACES[stamp.metric], dim=stamp.dim)
        try:
            self.index.load_index(str(path))
        except RuntimeError:
            return None
        self.deleted = deleted
        if self.live != stamp.count or self.index.dim != stamp.dim:
            return None
        return self, stamp
