"""Applying rows to a collection's sidecar and index: feed entries past a position, or a build's scan."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from edgenode import feed
from edgenode.vectors.collections import DatabaseLike
from edgenode.vectors.exact import Sidecar
from edgenode.vectors.hnsw import HnswIndex
from edgenode.vectors.state import Collection, raw

FEED_BATCH = 5000  # feed entries per apply round


class Applier:
    def __init__(self, db: DatabaseLike, build_threads: int) -> None:
        self.db = db
        self.build_threads = build_threads

    async def apply_range(
        self,
        c: Collection,
        sidecar: Sidecar,
        index: HnswIndex,
        low: int,
        high: int | None = None,
        force_until: int = 0,
    ) -> int:
        """Apply feed entries (low, high] to one sidecar + index pair; the caller holds apply_lock."""
        if high is None:
            high = await feed.head(self.db)
        columns = [c.spec.column, *c.spec.filter_columns]
        position = low
        while position < high:
            upper = min(high, position + FEED_BATCH)
            rows = await feed.changed_rows(self.db, c.spec.table, columns, position, upper)
            force = position < force_until
            await asyncio.to_thread(self.apply_rows, c, sidecar, index, rows, upper, force, False)
            position = upper
        return position

    @staticmethod
    def _vector(c: Collection, value: Any) -> tuple[bytes, np.ndarray] | None:
        blob = raw(value)
        if not isinstance(blob, bytes) or len(blob) != c.spec.dim * 4:
            return None
        vector = np.frombuffer(blob, dtype="<f4")
        if not np.isfinite(vector).all():
            return None
        if c.spec.metric == "cosine" and not np.any(vector):
            return None
        return blob, vector

    def apply_rows(
        self,
        c: Collection,
        sidecar: Sidecar,
        index: HnswIndex,
        rows: list[tuple[int, list[Any] | None]],
        position: int | None,
        force: bool,
        fresh: bool,
    ) -> None:
        """Blocking (worker thread). `fresh`: rows of a build's scan (nothing to delete, bulk add)."""
        upserts: list[tuple[int, bytes, list[Any], np.ndarray]] = []
        deletes: list[int] = []
        for rowid, values in rows:
            parsed = self._vector(c, values[0]) if values is not None else None
            if parsed is None:
                if values is not None:
                    c.skipped += 1  # NULL, wrong length or non-finite: not indexable, so not indexed
                if not fresh:
                    deletes.append(rowid)
                continue
            assert values is not None
            upserts.append((rowid, parsed[0], [raw(v) for v in values[1:]], parsed[1]))
        if not force and upserts:
            stored = sidecar.current([u[0] for u in upserts])
            upserts = [u for u in upserts if stored.get(u[0]) != (u[1], u[2])]
        sidecar.apply([(r, b, f) for r, b, f, _ in upserts], deletes, position)
        if upserts:
            vectors = np.stack([u[3] for u in upserts])
            rowids = [u[0] for u in upserts]
            if fresh:
                index.bulk_add(vectors, np.asarray(rowids, dtype=np.int64), threads=self.build_threads)
            else:
                index.upsert(vectors, rowids)
        if deletes:
            index.delete(deletes)
        c.dirty += len(upserts) + len(deletes)
