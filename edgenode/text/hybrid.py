"""Reciprocal rank fusion of a text arm and a vector arm (as in Elasticsearch's `rrf` retriever),
with a weight between them: a hit's score is

    (1 - weight) / (rank_constant + text rank) + weight / (rank_constant + vector rank)

over the arms that found it (ranks from 1). Ranks, not scores, are fused: BM25 scores and vector
distances have no common scale. Ties go to the lower rowid, so pages are stable.
"""

from __future__ import annotations

from edgenode.text.models import Arm, Hit


def fuse(
    text: list[tuple[int, float, str | None]],
    vector: list[tuple[int, float]],
    weight: float,
    rank_constant: int,
) -> list[Hit]:
    hits: dict[int, Hit] = {}
    for rank, (rowid, _, snippet) in enumerate(text, 1):
        hits[rowid] = Hit(rowid, (1 - weight) / (rank_constant + rank), snippet, ["text"], text_rank=rank)
    for rank, (rowid, distance) in enumerate(vector, 1):
        share = weight / (rank_constant + rank)
        hit = hits.get(rowid)
        if hit is None:
            hits[rowid] = Hit(rowid, share, None, ["vector"], vector_rank=rank, distance=distance)
        else:
            hit.score += share
            arms: list[Arm] = ["text", "vector"]
            hit.arms, hit.vector_rank, hit.distance = arms, rank, distance
    return sorted(hits.values(), key=lambda h: (-h.score, h.rowid))
