"""Query planner: exact (sqlite-vec in the sidecar) or HNSW, with filters.

- `exact`, or a collection no larger than `exact_threshold`: exact scan in the sidecar, the filter
  applied there.
- ANN without a filter: HNSW top-k. hnswlib computes distances on the full float32 vectors, so
  its distances are already exact and need no re-ranking.
- ANN with a filter: first collect the matching rowids in the sidecar, stopping after
  `exact_filter_rows` (a bounded scan: short when the filter is broad). A selective filter (at
  most `exact_filter_rows` rows) is answered exactly over exactly those rows, reported as mode
  "exact". Otherwise at least `exact_filter_rows / size` of the rows pass: ask HNSW for
  `overfetch * k` candidates (at least ef), keep those the filter accepts (checked in the
  sidecar), best first. If fewer than k survive, the observed pass rate estimates how many
  candidates would be needed and one larger round (up to `max_candidates`) is tried; failing
  that, an exact scan over the rows the filter accepts answers. Either way a filtered query
  returns k results whenever k rows match.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgenode.vectors.exact import CompiledFilter, Sidecar
from edgenode.vectors.hnsw import HnswIndex


@dataclass(frozen=True)
class PlannerSettings:
    exact_threshold: int = 2048
    exact_filter_rows: int = 4096
    overfetch: int = 10
    max_candidates: int = 4096


@dataclass
class Answer:
    rowids: list[int]
    distances: list[float]
    mode: str
    candidates: int


def ann_distances(metric: str, distances: np.ndarray) -> list[float]:
    # Plain Python over k values: numpy's per-call cost exceeds the work at this size.
    values: list[float] = distances.tolist()
    if metric == "l2":  # hnswlib's l2 is squared; the API (like sqlite-vec) reports the euclidean distance
        return [math.sqrt(v) if v > 0 else 0.0 for v in values]
    if metric == "cosine":  # rounding can dip just below 0
        return [v if v > 0 else 0.0 for v in values]
    return values


def uses_hnsw(index: HnswIndex | None, mode: str, settings: PlannerSettings) -> bool:
    """Whether a query goes to HNSW at all: not when exact search is asked for, and not in a
    collection small enough (`exact_threshold`) that an exact scan is cheap and complete."""
    return index is not None and (mode == "ann" or (mode == "auto" and index.live > settings.exact_threshold))


def search_one(
    index: HnswIndex | None,
    sidecar: Sidecar,
    metric: str,
    query: np.ndarray,
    k: int,
    flt: CompiledFilter | None,
    mode: str,
    ef: int | None,
    settings: PlannerSettings,
) -> Answer:
    if index is None or not uses_hnsw(index, mode, settings):
        rowids, dists, seen = sidecar.search(query, k, flt)
        return Answer(rowids, dists, "exact", seen)
    try:
        return _ann(index, sidecar, metric, query, k, flt, ef, settings, index.live)
    except RuntimeError:
        pass  # hnswlib found fewer than k live neighbours (many deletions): exact is always complete
    rowids, dists, seen = sidecar.search(query, k, flt)
    return Answer(rowids, dists, "exact", seen)


def _ann(
    index: HnswIndex,
    sidecar: Sidecar,
    metric: str,
    query: np.ndarray,
    k: int,
    flt: CompiledFilter | None,
    ef: int | None,
    settings: PlannerSettings,
    size: int,
) -> Answer:
    if flt is None:
        labels, dists = index.query(query[None, :], k, ef)
        return Answer(labels[0].tolist(), ann_distances(metric, dists[0]), "ann", labels.shape[1])
    matches = sidecar.matching_rowids(flt, settings.exact_filter_rows + 1)
    if len(matches) <= settings.exact_filter_rows:
        rowids, dists, seen = sidecar.search_rowids(query, k, matches)
        return Answer(rowids, dists, "exact", seen)
    fetch = min(max(k * settings.overfetch, ef or index.ef_search), size)
    tried = 0
    while True:
        labels, dists = index.query(query[None, :], fetch, ef)
        ids = labels[0].tolist()
        accepted = sidecar.matching(ids, flt)
        tried += len(ids)
        keep = [i for i, r in enumerate(ids) if r in accepted]
        if len(keep) >= k or fetch >= size:
            keep = keep[:k]
            picked = ann_distances(metric, dists[0][keep])
            return Answer([ids[i] for i in keep], picked, "ann", tried)
        needed = math.ceil(k * len(ids) / len(keep) * 1.5) if keep else settings.max_candidates + 1
        if needed > settings.max_candidates or needed <= fetch:
            break
        fetch = min(needed, size)
    rowids, dists2, seen = sidecar.search(query, k, flt)
    return Answer(rowids, dists2, "exact", tried + seen)


def search_many(
    index: HnswIndex | None,
    sidecar: Sidecar,
    metric: str,
    queries: np.ndarray,
    k: int,
    flt: CompiledFilter | None,
    mode: str,
    ef: int | None,
    settings: PlannerSettings,
    threads: int = 1,
) -> list[Answer]:
    if index is not None and flt is None and len(queries) > 1 and uses_hnsw(index, mode, settings):
        try:
            labels, dists = index.query(queries, k, ef, threads=threads)
        except RuntimeError:
            pass  # fewer than k reachable for some query: answer one by one, with the exact fallback
        else:
            return [
                Answer(labels[i].tolist(), ann_distances(metric, dists[i]), "ann", labels.shape[1])
                for i in range(len(queries))
            ]
    return [search_one(index, sidecar, metric, q, k, flt, mode, ef, settings) for q in queries]
