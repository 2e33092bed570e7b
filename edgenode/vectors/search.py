"""Search requests on a node's collections: checks that name what is wrong, the inline answer
for a plain single query, the planner on a worker thread for everything else, result objects.

`Searcher.search` (the HTTP API's JSON lists) and `Searcher.query` (numpy arrays, for code in the
node's process) are the entry points; collections come from the registry's `get`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgenode.api.errors import ApiError
from edgenode.vectors.collections import DatabaseLike, table_columns
from edgenode.vectors.exact import FILTER_TIMEOUT_MS
from edgenode.vectors.models import (
    MAX_BATCH,
    MAX_EF,
    MAX_K,
    Filter,
    Hit,
    Mode,
    SearchBatchResult,
    SearchRequest,
    SearchResult,
)
from edgenode.vectors.planner import Answer, PlannerSettings, ann_distances, search_many, uses_hnsw
from edgenode.vectors.state import Collection

# Past this ef one query takes over a millisecond (384 dims, 2 cores): long enough that the event
# loop is better off handing it to a thread, where it runs beside other requests.
INLINE_MAX_EF = 256


class Searcher:
    def __init__(
        self,
        get: Callable[[str], Collection],
        db: DatabaseLike,
        planner: PlannerSettings,
        filter_timeout_ms: int = FILTER_TIMEOUT_MS,
    ) -> None:
        self.get = get
        self.db = db
        self.planner = planner
        self.filter_timeout_ms = filter_timeout_ms

    def _queries(self, c: Collection, req: SearchRequest) -> tuple[np.ndarray, bool]:
        """The request's vectors as one float32 matrix (values are checked by `_check_values`)."""
        if (req.vector is None) == (req.vectors is None):
            raise ApiError(400, "invalid_request", "give exactly one of 'vector' or 'vectors'")
        batch = req.vectors is not None
        raw = req.vectors if req.vectors is not None else [req.vector or []]
        if not raw:
            raise ApiError(400, "invalid_request", "'vectors' is empty")
        if len(raw) > MAX_BATCH:
            raise ApiError(400, "invalid_request", f"at most {MAX_BATCH} vectors per request, got {len(raw)}")
        field = "vectors" if batch else "vector"
        for i, v in enumerate(raw):
            if len(v) != c.spec.dim:
                where = f"{field}[{i}]" if batch else field
                raise ApiError(
                    400,
                    "dimension_mismatch",
                    f"{where} has {len(v)} dimensions; collection {c.name!r} has dim {c.spec.dim}",
                )
        with np.errstate(over="ignore", invalid="ignore"):
            queries = np.array(raw, dtype=np.float32)  # beyond float32's range becomes inf: see _check_values
        return queries, batch

    @staticmethod
    def _check_values(c: Collection, queries: np.ndarray, batch_field: str | None) -> None:
        if len(queries) == 1:
            # One dot product passes every good vector: a finite, non-zero sum of squares means no
            # NaN, inf or zero vector. Anything else (or an overflow of huge values) takes the
            # element-wise checks below, which name the problem or pass it.
            with np.errstate(over="ignore", invalid="ignore"):
                square = float(np.dot(queries[0], queries[0]))
            if 0 < square < math.inf:
                return
        if not np.isfinite(queries).all():
            row, col = (int(x) for x in np.argwhere(~np.isfinite(queries))[0])
            where = f"{batch_field}[{row}][{col}]" if batch_field else f"vector[{col}]"
            raise ApiError(400, "invalid_vector", f"{where} is not a finite float32 number (NaN, inf or too large)")
        if c.spec.metric == "cosine" and not queries.any(axis=1).all():
            raise ApiError(400, "invalid_vector", "a zero vector has no cosine distance")

    @staticmethod
    def _check_options(k: int, ef: int | None) -> None:
        if not 1 <= k <= MAX_K:
            raise ApiError(400, "invalid_k", f"k must be between 1 and {MAX_K}, got {k}")
        if ef is not None and not 1 <= ef <= MAX_EF:
            raise ApiError(400, "invalid_ef", f"ef must be between 1 and {MAX_EF}, got {ef}")

    def _answer_inline(
        self, c: Collection, queries: np.ndarray, k: int, mode: str, ef: int | None, started: float
    ) -> SearchResult | None:
        """A plain single ANN query answered on the event loop when the index is free right now for
        a query at this ef; None sends the caller to the planner on a worker thread.

        An HNSW query at ef <= 256 takes at most about a millisecond, less than handing it to a
        thread and back costs the event loop. There is no hold on c.swap: this reads only `index`,
        and a swap merely points c.index at a new one while this reference keeps the old one whole.
        The query's values are checked after the search, from its first distance: hnswlib answers
        a NaN or inf query at once with NaN distances and a zero cosine query with distance 1, so
        only those answers pay for `_check_values` (which then names the problem)."""
        index = c.index
        if index is None or len(queries) != 1 or not uses_hnsw(index, mode, self.planner):
            return None
        if (ef or index.ef_search) > INLINE_MAX_EF:
            return None
        try:
            found = index.query_nowait(queries, k, ef)
        except RuntimeError:
            return None  # fewer than k live neighbours: the planner falls back to exact
        if found is None:
            return None
        labels, dists = found
        first = float(dists[0, 0])
        if not math.isfinite(first) or (first == 1.0 and c.spec.metric == "cosine"):
            self._check_values(c, queries, None)
        distances = ann_distances(c.spec.metric, dists[0])
        return SearchResult(
            results=[Hit(r, d) for r, d in zip(labels[0].tolist(), distances, strict=True)],
            mode="ann",
            candidates=len(distances),
            elapsed_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    async def search(self, name: str, req: SearchRequest) -> SearchResult | SearchBatchResult:
        """The HTTP API's search: JSON lists in, one result (`vector`) or a batch (`vectors`) out."""
        started = time.perf_counter()
        c = self.get(name)
        self._check_options(req.k, req.ef)
        queries, batch = self._queries(c, req)
        field = "vectors" if batch else None
        results = await self._run(c, queries, req.k, req.filter, req.mode, req.ef, req.include, started, field)
        if batch:
            return SearchBatchResult(batch=results, elapsed_ms=results[0].elapsed_ms)
        return results[0]

    async def query(
        self,
        name: str,
        vectors: np.ndarray,
        k: int = 10,
        *,
        filter: Filter | None = None,
        mode: Mode = "auto",
        ef: int | None = None,
        include: Sequence[str] = (),
    ) -> list[SearchResult]:
        """In-process search for code running inside the node's process: `vectors` is one query
        (shape (dim,)) or several (shape (n, dim)), any float dtype; one result per query. The
        same checks and planner as `search`, without the JSON lists."""
        started = time.perf_counter()
        c = self.get(name)
        self._check_options(k, ef)
        queries = np.asarray(vectors)
        if queries.dtype != np.float32:
            with np.errstate(over="ignore", invalid="ignore"):
                queries = queries.astype(np.float32)  # beyond float32's range becomes inf: caught below
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.ndim != 2 or queries.shape[1] != c.spec.dim or not 1 <= len(queries) <= MAX_BATCH:
            raise ApiError(
                400,
                "dimension_mismatch",
                f"vectors have shape {vectors.shape}; collection {c.name!r} takes (dim,) or (n, dim) with "
                f"dim {c.spec.dim} and 1 <= n <= {MAX_BATCH}",
            )
        return await self._run(c, queries, k, filter, mode, ef, include, started, "vectors")

    def _search_planned(
        self, c: Collection, queries: np.ndarray, k: int, flt: Filter | None, mode: str, ef: int | None
    ) -> list[Answer]:
        """Any search, through the planner, on a worker thread."""
        with c.swap.shared():
            if c.index is None or c.sidecar is None:
                raise ApiError(503, "collection_not_ready", f"collection {c.name!r} is being replaced")
            compiled = c.sidecar.compile_filter(flt.sql, flt.params, self.filter_timeout_ms) if flt else None
            return search_many(c.index, c.sidecar, c.spec.metric, queries, k, compiled, mode, ef, self.planner)

    async def _run(
        self,
        c: Collection,
        queries: np.ndarray,
        k: int,
        flt: Filter | None,
        mode: str,
        ef: int | None,
        include: Sequence[str],
        started: float,
        batch_field: str | None,
    ) -> list[SearchResult]:
        """One result per query: inline when that is possible, else through the planner on a worker
        thread. The values are checked here; `batch_field` is how errors name a query."""
        if flt is None and not include:
            answer = self._answer_inline(c, queries, k, mode, ef, started)
            if answer is not None:
                return [answer]
        self._check_values(c, queries, batch_field)
        if include:
            unknown = [col for col in include if col.lower() not in c.columns]
            if unknown:
                c.columns = await table_columns(self.db, c.spec.table)
                unknown = [col for col in include if col.lower() not in c.columns]
            if unknown:
                raise ApiError(
                    400, "unknown_column", f"include: {unknown[0]!r} is not a column of table {c.spec.table!r}"
                )
        if c.index is None or c.sidecar is None:
            raise ApiError(
                503, "collection_not_ready", f"collection {c.name!r} is {c.state} ({c.progress:.0%}); retry shortly"
            )

        answers = await asyncio.to_thread(self._search_planned, c, queries, k, flt, mode, ef)
        rows: dict[int, dict[str, Any]] = {}
        if include:
            ids = sorted({r for a in answers for r in a.rowids})
            if ids:
                cols = ", ".join(f'"{col}"' for col in include)
                result = await self.db.read(
                    f'SELECT rowid, {cols} FROM "{c.spec.table}" WHERE rowid IN ({",".join(map(str, ids))})',
                    max_rows=len(ids) + 1,
                )
                rows = {int(r[0]): dict(zip(include, r[1:], strict=True)) for r in result.rows}
        elapsed = round((time.perf_counter() - started) * 1000, 3)
        return [
            SearchResult(
                results=[
                    Hit(rowid=r, distance=d, row=rows.get(r) if include else None)
                    for r, d in zip(a.rowids, a.distances, strict=True)
                ],
                mode=a.mode,  # type: ignore[arg-type]
                candidates=a.candidates,
                elapsed_ms=elapsed,
            )
            for a in answers
        ]
